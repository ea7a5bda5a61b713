"""Publishing on the Hugging Face Hub: cards rendered from templates, and folders pushed in one commit.

- :mod:`.cards`: ``render_card`` (``hub_cards/*.md`` templates, jinja2);
- :mod:`.model_card`: ``HLPModelCard`` / ``MAPResult``, the model card of an HLP tagger;
- :mod:`.push`: ``push_folder`` (timm-style: build the folder locally, then one ``upload_folder``);
- :mod:`.publish`: ``prepare_hub_folder`` / ``publish_model`` for a trained model folder.
"""

from .cards import card_template, render_card
from .model_card import LABEL_SETS, HLPModelCard, MAPResult
from .publish import prepare_hub_folder, publish_model, training_recipe
from .push import push_folder

__all__ = [
    "LABEL_SETS",
    "HLPModelCard",
    "MAPResult",
    "card_template",
    "prepare_hub_folder",
    "publish_model",
    "push_folder",
    "render_card",
    "training_recipe",
]
