"""Render the card templates of ``hub_cards/`` (jinja2, as huggingface_hub's cards do)."""

from __future__ import annotations

from importlib import resources

__all__ = ["card_template", "render_card"]


def card_template(name: str) -> str:
    """Text of ``hub_cards/<name>`` (shipped in the package as ``hlp_audio.hub_cards``)."""
    source = resources.files("hlp_audio.hub_cards").joinpath(name)
    if not source.is_file():
        available = sorted(p.name for p in resources.files("hlp_audio.hub_cards").iterdir() if p.name.endswith(".md"))
        raise FileNotFoundError(f"no card template {name!r} in hub_cards/; available: {available}")
    return source.read_text(encoding="utf-8")


def render_card(name: str, **fields) -> str:
    """Render a template with strict undefined variables: a missing field is an error, not a blank."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    try:
        return env.from_string(card_template(name)).render(**fields)
    except jinja2.UndefinedError as err:
        raise ValueError(f"card template {name}: {err}") from None
