"""Where a run stands (saved in every checkpoint), and saving a trained model folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import List, Optional, Union

__all__ = ["TrainingProgress", "save_trained_model"]

PathLike = Union[str, "os.PathLike[str]"]


class TrainingProgress:
    """Where a run stands; saved in every checkpoint (``accelerator.register_for_checkpointing``)."""

    def __init__(self):
        self.epoch = 0  # epochs completed
        self.batches_in_epoch = 0  # batches of the current epoch already trained on
        self.global_step = 0  # optimizer updates
        self.micro_step = 0  # batches trained on, all epochs (the key of per-step randomness)
        self.best_metric: Optional[float] = None
        self.best_epoch: Optional[int] = None
        self.history: List[dict] = []  # one entry of evaluation results per epoch

    def state_dict(self) -> dict:
        return dict(self.__dict__)

    def load_state_dict(self, state: dict) -> None:
        unknown = set(state) - set(self.__dict__)
        if unknown:
            raise ValueError(f"unknown training progress fields {sorted(unknown)}")
        self.__dict__.update(state)


def save_trained_model(accelerator, model, feature_extractor, folder: PathLike, *, args: dict, metrics=None, progress=None) -> None:
    """Save a model folder ready for ``from_pretrained`` and the Hub, from every process (main writes).

    Writes the safetensors weights, ``config.json`` (with the ontology), the remote code, the
    feature extractor, ``training_args.json`` and ``eval_results.json`` (the metrics of this model).
    """
    state_dict = accelerator.get_state_dict(model)  # a collective call under FSDP / DeepSpeed
    if accelerator.is_main_process:
        folder = Path(folder)
        if folder.exists():
            shutil.rmtree(folder)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.save_pretrained(folder, state_dict=state_dict)
        feature_extractor.save_pretrained(folder)
        (folder / "training_args.json").write_text(json.dumps(args, indent=2, default=str))
        if metrics is not None:
            record = dict(metrics)
            if progress is not None:
                record.setdefault("epoch", progress.epoch)
                record.setdefault("step", progress.global_step)
            (folder / "eval_results.json").write_text(json.dumps(record, indent=2))
    accelerator.wait_for_everyone()
