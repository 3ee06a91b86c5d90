"""CLI options whose defaults come from the typed models that own them.

A default lives once, on its pydantic model (``TextRequest.temperature``,
``ImageGenRequest.guidance_scale``, ``ServeConfig.max_queue``...); the CLI reads it here, so a
change there reaches every face. A command's parameters carry the core's names
(``guidance_scale``, ``max_queue``); where the flag is spelled otherwise, ``FLAGS`` says so, once.
"""

from __future__ import annotations

from typing import Any

import typer
from pydantic import BaseModel

# core name → the CLI flag that stands for it (every other field's flag is its name, dashed)
FLAGS = {"guidance_scale": "--guidance", "class_label": "--class", "max_queue": "--queue"}


def default(model: type[BaseModel], field: str) -> Any:
    """The default of ``model.field`` (a factory's product for mutable defaults)."""
    return model.model_fields[field].get_default(call_default_factory=True)


def option(model: type[BaseModel], field: str, *, help: str | None = None, **settings: Any) -> Any:
    """A ``typer.Option`` for ``model.field``: its default, its flag, its description as help."""
    flags = [FLAGS[field]] if field in FLAGS else []
    help = help or model.model_fields[field].description
    return typer.Option(default(model, field), *flags, help=help, **settings)
