"""``genloop data prepare|list``: corpora and image collections into immutable, hashed datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from genloop.cli.console import command_app, err, faced, out
from genloop.cli.options import option
from genloop.data.text import TextDataConfig

app = command_app(help="Prepare and inspect datasets.", no_args_is_help=True,
                  epilog="Examples:\n\n    genloop data prepare tinyshakespeare\n\n"
                  "    genloop data list")

IMAGE_BUILTINS = ("digits", "shapes", "mnist", "fashion-mnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def looks_like_images(source: str) -> bool:
    """An image built-in, an .npz, or a folder holding image files (at any depth)."""
    path = Path(source)
    if source in IMAGE_BUILTINS or path.suffix == ".npz":
        return True
    return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*"))


@app.command("prepare", epilog="Examples:\n\n    genloop data prepare tinyshakespeare\n\n"
             "    genloop data prepare notes.jsonl --field body --tokenizer bpe --vocab-size 4096\n\n"
             "    genloop data prepare ./my_texts/\n\n"
             "    genloop data prepare mnist\n\n"
             "    genloop data prepare ./photos/ --image-size 32 --channels 3")
@faced
def data_prepare(
    source: Annotated[str, typer.Argument(
        help="text: python-docs | tinyshakespeare | tang-poems | a .txt, .jsonl or folder; "
        "images: digits | shapes | mnist | fashion-mnist | an .npz | a folder of images "
        "(class sub-folders become labels)")],
    tokenizer: str = option(TextDataConfig, "tokenizer", help="text: char or bpe"),
    vocab_size: int = option(TextDataConfig, "vocab_size", help="text: BPE vocabulary size"),
    field: str = option(TextDataConfig, "field", help="text: .jsonl field holding the text"),
    name: Annotated[str | None, typer.Option(help="dataset name")] = None,
    image_size: Annotated[int | None, typer.Option(help="images: resize to this square side")] = None,
    channels: Annotated[int | None, typer.Option(help="images: 1 (grey) or 3 (RGB)")] = None,
) -> None:
    """Read, clean and split a corpus or an image collection into an immutable, hashed dataset."""
    from genloop.data.images import ImageDataConfig
    from genloop.errors import RecipeError, validation_message
    from genloop.store import Store

    try:
        if looks_like_images(source):
            config: Any = ImageDataConfig(source=source, name=name, image_size=image_size,
                                          channels=channels)
        else:
            config = TextDataConfig(source=source, tokenizer=tokenizer, vocab_size=vocab_size,
                                    field=field, name=name)
    except ValueError as e:
        raise RecipeError(validation_message(e)) from None
    ds = config.prepare(progress=lambda m: err.print(f"[dim]{m}[/]", highlight=False))
    Store().add_dataset(ds.name, ds.hash, config.kind, str(ds.path), ds.meta)
    table = Table(title=f"{ds.name} ({ds.hash[:16]})", show_header=False)
    for k, v in ds.meta.get("counts", {}).items():
        table.add_row(k, f"{v:,}" if isinstance(v, int) else str(v))
    table.add_row("path", str(ds.path))
    out.print(table)


@app.command("list", epilog="Example:\n\n    genloop data list")
@faced
def data_list() -> None:
    """Datasets prepared in this workspace."""
    from genloop.store import Store

    table = Table("name", "hash", "kind", "path")
    for d in Store().list_datasets():
        table.add_row(d.name, d.hash[:16], d.kind, d.path)
    out.print(table)
