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
                  "    genloop data from-feedback tang-poems --objective dpo\n\n"
                  "    genloop data list")

IMAGE_BUILTINS = ("digits", "shapes", "shapes-pairs", "mnist", "fashion-mnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def looks_like_images(source: str) -> bool:
    """An image built-in, an .npz, a COCO captions .json, or a folder holding image files (at
    any depth)."""
    path = Path(source)
    if source in IMAGE_BUILTINS or path.suffix == ".npz" or path.suffix.lower() == ".json":
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
        help="text: python-docs | tinyshakespeare | tang-poems | shapes-captions | a .txt, .jsonl "
        "or folder; "
        "images: digits | shapes | shapes-pairs | mnist | fashion-mnist | an .npz | a folder of images "
        "(class sub-folders become labels)")],
    tokenizer: str = option(TextDataConfig, "tokenizer", help="text: char, bpe or word"),
    vocab_size: int = option(TextDataConfig, "vocab_size", help="text: BPE (or word) vocabulary size"),
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


@app.command("from-feedback", epilog="Examples:\n\n"
             "    genloop data from-feedback tang-poems --objective dpo\n\n"
             "    genloop data from-feedback tang-poems@2 --objective kto --threshold 3\n\n"
             "    genloop data from-feedback tang-poems --objective sft --out liked.jsonl")
@faced
def data_from_feedback(
    model: Annotated[str, typer.Argument(
        help="the model whose outputs were rated: 'name' (all its versions) or 'name@N'")],
    objective: Annotated[str, typer.Option(
        help="sft: the liked outputs as prompt → completion pairs; dpo or reward: preference "
        "pairs (A/B preferences, and two ratings of one prompt); kto: each rated output, "
        "desirable or not")],
    threshold: Annotated[int | None, typer.Option(
        help="ratings at or above it are liked [default: 4]")] = None,
    min_records: Annotated[int | None, typer.Option(
        help="refuse fewer records than this [default: the objective's minimum, 8]")] = None,
    records_file: Annotated[Path | None, typer.Option(
        "--out", help="also write the records (JSONL, each with its generation and feedback ids) "
        "to this file")] = None,
) -> None:
    """Build a dataset from the feedback on a model's outputs, tokenized as the model is, and
    register it; the counts, threshold and what was skipped are kept with it."""
    from genloop.atomic import atomic_write_bytes
    from genloop.data.kinds import KINDS
    from genloop.errors import InvalidInput
    from genloop.feedback.datasets import DEFAULT_THRESHOLD, feedback_data
    from genloop.models.modeldir import ModelDir
    from genloop.store import Store

    store = Store()
    version = store.resolve(model)
    tokenizer = ModelDir(Path(version.path)).tokenizer()
    if tokenizer is None:
        raise InvalidInput(f"model {version.ref} has no tokenizer: datasets from feedback are "
                           "for text models")
    fd = feedback_data(store, model, objective, min_records=min_records,
                       threshold=DEFAULT_THRESHOLD if threshold is None else threshold)
    kind = fd.data["kind"]
    # every kind's data section has a prepare(), which DataKind.config (type[BaseModel]) cannot say
    section: Any = KINDS[kind].config.model_validate(fd.data)
    ds = section.prepare(
        progress=lambda m: err.print(f"[dim]{m}[/]", highlight=False), tokenizer=tokenizer)
    store.add_dataset(ds.name, ds.hash, kind, str(ds.path), ds.meta)
    if records_file is not None:
        atomic_write_bytes(records_file, fd.path.read_bytes())
    s = fd.summary
    table = Table(title=f"{ds.name} ({ds.hash[:16]})", show_header=False)
    table.add_row("objective", f"{objective} ({kind}{', ' + s['form'] if s['form'] else ''})")
    split = ds.meta["counts"]["records"]
    table.add_row("records", f"{s['records']:,} (train {split['train']:,}, val {split['val']:,})")
    table.add_row("from", ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in s["sources"].items()))
    table.add_row("feedback", ", ".join(f"{k.replace('_', ' ')} {v:,}"
                                        for k, v in s["feedback"].items()))
    table.add_row("threshold", str(s["threshold"]))
    skipped = {k: v for k, v in s["skipped"].items() if v}
    table.add_row("skipped", ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in skipped.items())
                  or "none")
    table.add_row("hash", ds.hash)
    table.add_row("records file", str(records_file or fd.path))
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
