"""``genloop models list|show``: the registered versions and their cards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markdown import Markdown
from rich.table import Table

from genloop.cli.console import command_app, faced, out

app = command_app(help="List and inspect registered model versions.", no_args_is_help=True,
                  epilog="Examples:\n\n    genloop models list\n\n"
                  "    genloop models show shakespeare-char@1")


@app.command("list", epilog="Example:\n\n    genloop models list")
@faced
def models_list() -> None:
    """All registered versions with their key metrics."""
    from genloop.store import Store

    table = Table("model", "family", "val loss", "bits/char", "FID", "created", "parent")
    for v in Store().list_models():
        m = v.metrics or {}
        table.add_row(v.ref, v.family, fmt(m.get("val_loss")), fmt(m.get("bits_per_char")),
                      fmt(m.get("fid")), v.created_at.strftime("%Y-%m-%d %H:%M"), v.parent or "")
    out.print(table)


@app.command("show", epilog="Example:\n\n    genloop models show shakespeare-char@1")
@faced
def models_show(model: Annotated[str, typer.Argument(help="name or name@N")]) -> None:
    """Print a version's model card."""
    from genloop.models.modeldir import ModelDir
    from genloop.store import Store

    v = Store().resolve(model)
    card = ModelDir(Path(v.path)).card()
    out.print(Markdown(card) if card else f"{v.ref}: no card")


def fmt(v: Any) -> str:
    return "" if v is None else f"{v:.4f}"
