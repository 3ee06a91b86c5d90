"""``genloop import``: a Hugging Face causal LM (a directory, or a Hub repository pinned to a
commit) registered as a version of family ``hf`` (``hub/imports.py``)."""

from __future__ import annotations

from typing import Annotated

import typer

from genloop.cli.console import command_app, err, faced, out

app = command_app()


@app.command(name="import", epilog="Examples:\n\n"
             "    genloop import ./my-gpt2 --name my-gpt2          # a save_pretrained directory\n\n"
             "    genloop import gpt2 --name gpt2 --revision 607a30d783dfa663caf39e06633721c8d4cfcd7e"
             "   # GPT-2 from the Hub at one commit\n\n"
             "    genloop import Qwen/Qwen2.5-0.5B --name qwen --revision main   # a branch, recorded as "
             "its commit sha\n\n"
             "    genloop generate gpt2 --prompt 'Hello' --seed 1\n\n"
             "A Hub id downloads config, tokenizer, chat-template and *.safetensors files only "
             "(never a pickle) into GENLOOP_CACHE/hub; the commit sha and each file's sha256 "
             "are recorded (HF_TOKEN for gated models, HF_ENDPOINT for a mirror).")
@faced
def import_(
    src: Annotated[str, typer.Argument(help="a Hugging Face model directory (config.json, "
                                            "*.safetensors, tokenizer.json) or a Hub id "
                                            "(org/name, or gpt2)")],
    name: Annotated[str, typer.Option("--name", help="register it as NAME@N")],
    revision: Annotated[str | None, typer.Option(
        help="Hub only: the branch, tag or commit to download (recorded as its commit sha)")] = None,
) -> None:
    """Import a pretrained causal LM: it generates, serves (with continuous batching), chats
    through its own template and tunes like any genloop model. Weights are read from safetensors
    only (pickles are refused); the lineage records the sha256 of every file."""
    from genloop.hub.imports import import_model

    version = import_model(src, name, revision=revision)
    err.print(f"imported {src} ({version.family})")
    out.print(version.ref, highlight=False)
