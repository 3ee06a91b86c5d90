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


@app.command("quantize", epilog="Examples:\n\n    genloop models quantize shakespeare-char@1\n\n"
             "    genloop models quantize shakespeare-char@1 --variant onnx\n\n"
             "    genloop models quantize imported-gpt2@1 --text held-out.txt\n\n"
             "    genloop generate shakespeare-char@1:int8 --prompt 'ROMEO:'")
@faced
def models_quantize(
    model: Annotated[str, typer.Argument(help="name or name@N (a gpt version)")],
    variant: Annotated[str, typer.Option(help="int8 (onnxruntime, int8 weights) or onnx (fp32)")] = "int8",
    text: Annotated[Path | None, typer.Option(
        help="measure the quality on this .txt or .jsonl (imported models have no dataset)")] = None,
    field: Annotated[str, typer.Option(help="with --text: the .jsonl field holding the text")] = "text",
) -> None:
    """Build a servable variant of a version (NAME@N:int8), its quality measured onto the card:
    on the version's validation split, or on --text FILE (needed for imported models)."""
    from genloop.hub.onnx import make_variant

    meta = make_variant(model, variant, text=text, field=field)
    q = meta["quality"]
    on = f"bits/char on {Path(q['text']).name}" if q.get("text") else "validation bits/char"
    quality = (f"{on} {q['bits_per_char']:.4f} vs fp32 {q['fp32_bits_per_char']:.4f} "
               f"({q['bits_per_char_delta']:+.4f}, {q['tokens']:,} tokens)") if q.get("measured") \
        else f"quality not measured: {q.get('why', '')}"
    out.print(f"{meta['of']}:{variant} ready: {quality}")
