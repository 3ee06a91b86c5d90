"""``genloop eval``: a model on its own dataset (metrics stored on the version), or a text model
on any held-out text (``--data``: reported, not stored)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from genloop.cli.console import command_app, faced, out
from genloop.cli.options import default, option
from genloop.evaluation.image import ImageEvalConfig
from genloop.evaluation.text import EvalConfig

app = command_app()


@app.command(name="eval", epilog="Examples:\n\n    genloop eval shakespeare-char@1\n\n"
             "    genloop eval python-docs --samples 8\n\n"
             "    genloop eval mnist-diffusion --samples 1000 --steps 50 --guidance 2\n\n"
             "    genloop eval shakespeare-char --data hamlet.txt\n\n"
             "    genloop eval imported-gpt2 --text hamlet.txt\n\n"
             "    genloop eval python-docs --data notes.jsonl --field body --json")
@faced
def eval_(
    model: Annotated[str, typer.Argument(help="model version: name or name@N")],
    num_samples: Annotated[int | None, typer.Option(
        "--samples", help=f"samples for the diversity metrics (text, {default(EvalConfig, 'num_samples')}) "
        f"or FID/KID/PR (images, {default(ImageEvalConfig, 'num_samples')})")] = None,
    seed: Annotated[int, typer.Option(help="seed of the samples")] = 0,
    steps: int | None = option(ImageEvalConfig, "steps", help="images: diffusion steps"),
    sampler: str = option(ImageEvalConfig, "sampler", help="images: ddim, ddpm or dpmpp_2m"),
    guidance_scale: float = option(ImageEvalConfig, "guidance_scale",
                                   help="images: classifier-free guidance scale"),
    importance_samples: int = option(ImageEvalConfig, "importance_samples",
                                     help="VAE: importance samples for the NLL"),
    feature_extractor: str | None = option(
        ImageEvalConfig, "feature_extractor",
        help="images: classifier name@N for the features (default: the dataset's own)"),
    data: Annotated[Path | None, typer.Option(
        "--data", "--text",
        help="text models: score this .txt or .jsonl instead of the model's own dataset "
             "(imported models have none)")] = None,
    field: Annotated[str, typer.Option(help="with --data: the .jsonl field holding the text")] = "text",
    as_json: Annotated[bool, typer.Option("--json", help="print the metrics as one JSON object")] = False,
) -> None:
    """Evaluate a model on its dataset; store the metrics on the version.

    With **--data FILE**, score a text model on that text instead (nothing is stored): nats per
    token and per character, bits per character, the tokens and characters counted, and the
    characters the model's tokenizer does not know (scored as unknown, counted with their share).
    A .txt is one document; each .jsonl row is one, preceded by an end-of-text token as in
    training. The text is read in windows of the model's context, one every half context (the
    stride): each token is scored once, and every token past the first window is predicted from at
    least half a context of the text before it.
    """
    from genloop.errors import InvalidInput
    from genloop.evaluation.run import evaluate_version
    from genloop.generation.service import ImageModel, load

    loaded = load(model)
    if data is not None:
        if isinstance(loaded, ImageModel):
            raise InvalidInput(f"{loaded.ref} is an image model: --data scores text models only")
        if num_samples is not None:
            raise InvalidInput("--samples does not apply with --data: held-out text is scored, not sampled")
        from genloop.evaluation.text import read_documents, score_text

        docs = read_documents(data, field)
        score = score_text(loaded.family, loaded.network, loaded.tokenizer, docs)
        show({"model": loaded.ref, "data": str(data), **score.metrics()}, as_json,
             title=f"{loaded.ref} on {data}")
        return
    options: dict[str, Any] = {}
    if isinstance(loaded, ImageModel):
        options = dict(steps=steps, sampler=sampler, guidance_scale=guidance_scale,
                       importance_samples=importance_samples, feature_extractor=feature_extractor,
                       grid=0)
    metrics = evaluate_version(model, num_samples=num_samples, seed=seed, **options)
    show(metrics, as_json, title=model)


def show(metrics: dict[str, Any], as_json: bool, title: str) -> None:
    if as_json:
        print(json.dumps(metrics, ensure_ascii=False))
        return
    table = Table(title=title, show_header=False)
    for k, v in metrics.items():
        if k in ("model", "data"):
            continue
        if k == "unknown":
            v = repr(v if len(v) <= 40 else v[:40] + "…")
        table.add_row(k, f"{v:,}" if isinstance(v, int) else f"{v:,.4f}" if isinstance(v, float) else str(v))
    out.print(table, highlight=False)
