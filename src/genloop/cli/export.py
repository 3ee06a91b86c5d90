"""``genloop export``: a model version out of genloop, as a transformers directory (``hf``), or as
an ONNX decoder run by onnxruntime (``onnx``, fp32; ``int8``, its weights quantized)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from genloop.cli.console import command_app, faced, out

app = command_app()


class Format(StrEnum):
    hf = "hf"
    onnx = "onnx"
    int8 = "int8"


@app.command(name="export", epilog="Examples:\n\n"
             "    genloop export shakespeare-char@1 --format hf exported/shakespeare\n\n"
             "    genloop export python-docs --format onnx exported/python-docs-onnx\n\n"
             "    genloop export python-docs@2 --format int8 exported/python-docs-int8")
@faced
def export(
    model: Annotated[str, typer.Argument(help="model version: name or name@N")],
    out_dir: Annotated[Path, typer.Argument(help="a new (or empty) directory to write")],
    format: Annotated[Format, typer.Option("--format", "-f", help="hf: a transformers directory "
                                           "(GPT-2 layout); onnx / int8: an onnxruntime decoder",
                                           case_sensitive=False)] = Format.hf,
) -> None:
    """Write a model version out of genloop, in a format other tools read.

    **hf**: a `gpt` as a transformers GPT-2 directory: `config.json`, `model.safetensors`,
    `generation_config.json`, the tokenizer as a `tokenizers` JSON that encodes exactly as genloop
    does, the chat template as `chat_template.jinja`, and the model card as `README.md`.
    `AutoModelForCausalLM.from_pretrained(OUT_DIR)` gives genloop's logits (within 1e-5).

    **onnx** / **int8**: the decoder with its KV cache as ONNX, fp32 or with int8 weights.

    The directory is written whole or not at all; an existing non-empty one is refused.
    """
    if format is Format.hf:
        written = _export_hf(model, out_dir)
    else:
        from genloop.hub.onnx import export_onnx  # onnx and onnxruntime: loaded only when asked for

        written = export_onnx(model, out_dir, None, int8=format is Format.int8)
    out.print(f"exported {model} ({format.value}) to {written}", highlight=False)


def _export_hf(model: str, out_dir: Path) -> Path:
    from genloop.generation.chat import load_chat_template
    from genloop.hub.export import export_hf
    from genloop.models.modeldir import ModelDir
    from genloop.store import Store

    store = Store()
    version = store.resolve(model)
    chat = load_chat_template(ModelDir(Path(version.path))).as_jinja()
    return export_hf(version.ref, out_dir, store, chat_template=chat, sampling=sampling_defaults())


def sampling_defaults() -> dict[str, Any]:
    """genloop's own sampling defaults (``TextRequest``), for generation_config.json (its length
    is the model's context: learned positions end there)."""
    from genloop.generation.text import TextRequest

    fields = TextRequest.model_fields
    return {"do_sample": True, "temperature": fields["temperature"].default,
            "top_k": fields["top_k"].default, "top_p": fields["top_p"].default,
            "repetition_penalty": fields["repetition_penalty"].default}
