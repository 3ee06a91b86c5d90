"""``genloop generate``: text or images from a registered model, every output recorded."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from genloop.cli.console import command_app, err, faced, out
from genloop.cli.options import default, option
from genloop.generation.fewshot import FewShot
from genloop.generation.image import ImageGenRequest
from genloop.generation.text import TextRequest

app = command_app()

TEXT_SAMPLES = default(TextRequest, "num_samples")
IMAGE_SAMPLES = default(ImageGenRequest, "num_samples")


@app.command(epilog="Examples:\n\n"
             "    genloop generate shakespeare-char --prompt 'ROMEO:' --seed 1\n\n"
             "    genloop generate python-docs@1 --prompt 'The ' -n 3 --temperature 0.7 --top-k 20\n\n"
             "    genloop generate tang-poems --prompt $'春望\\n' --stop $'\\n\\n' --no-stream --json\n\n"
             "    genloop generate tang-poems --prompt $'春望\\n' --best-of 4 --reward-model tang-rm\n\n"
             "    genloop generate tang-titles-seq2seq --prompt 春望 --num-beams 4\n\n"
             "    genloop generate tiny --prompt 'c>' --few-shot mapping.jsonl --shots 4 "
             "--shot-separator $'\\n' --temperature 0\n\n"
             "    genloop generate mnist-diffusion -n 64 --class 3 --steps 50 --out threes.png\n\n"
             "    genloop generate mnist-vae -n 16 --interpolate --seed 4 --out walk.png\n\n"
             "    genloop generate shapes-t2i --prompt 'a large blue triangle on the left' -n 8\n\n"
             "    genloop generate shapes-captioner --image photo.png --num-beams 3\n\n"
             "    genloop generate --replay 3f2a9c0d1e2b4c5d   # run a recorded generation again")
@faced
def generate(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(
        help="model version: name (newest) or name@N (not with --replay)")] = None,
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="prompt (repeat for a batch; "
                                              "text → image: one grid row each)")] = [],
    max_new_tokens: int = option(TextRequest, "max_new_tokens", help="tokens to generate"),
    temperature: float = option(TextRequest, "temperature", help="0 = greedy"),
    top_k: int | None = option(TextRequest, "top_k", help="keep the k most likely tokens"),
    top_p: float | None = option(TextRequest, "top_p", help="nucleus sampling mass"),
    repetition_penalty: float = option(TextRequest, "repetition_penalty",
                                       help="above 1 discourages repeats"),
    frequency_penalty: float = option(TextRequest, "frequency_penalty",
                                      help="subtracted from a token's logit per time it was generated"),
    presence_penalty: float = option(TextRequest, "presence_penalty",
                                     help="subtracted once from every token generated so far"),
    logit_bias: Annotated[list[str], typer.Option(
        help="TOKEN_ID=BIAS added to that token's logit, -100 to 100 (repeatable)")] = [],
    stop: list[str] = option(TextRequest, "stop", help="stop string (repeatable)"),
    seed: int | None = option(TextRequest, "seed", help="same seed + same request = same output"),
    num_samples: Annotated[int | None, typer.Option(
        "--num-samples", "-n", help=f"samples per prompt (text, default {TEXT_SAMPLES}) or images "
        f"(default {IMAGE_SAMPLES})")] = None,
    best_of: int | None = option(TextRequest, "best_of",
                                 help="text: draw this many candidates per prompt and keep the "
                                      "-n best (by --reward-model, else mean token log-prob)"),
    reward_model: str | None = option(TextRequest, "reward_model",
                                      help="text: the reward model (name or name@N) that ranks "
                                           "the --best-of candidates"),
    num_beams: int = option(TextRequest, "num_beams",
                            help="text: beam search over this many hypotheses (deterministic; "
                                 "families with beam search, e.g. seq2seq)"),
    few_shot: Annotated[str | None, typer.Option(
        "--few-shot", help="text: put --shots examples drawn (seeded by --seed) from this pairs "
        "dataset (name or hash) or .jsonl file of prompt/completion records before the prompt")] = None,
    shots: Annotated[int | None, typer.Option(
        help=f"text: how many --few-shot examples (default {default(FewShot, 'k')})")] = None,
    shot_template: str = typer.Option(default(FewShot, "template"),
                                      help="text: one --few-shot example"),
    shot_separator: str = typer.Option(default(FewShot, "separator"),
                                       help="text: after each --few-shot example"),
    grounding: Annotated[str | None, typer.Option(
        "--grounding", help="text: put the triples retrieved from this knowledge graph (genloop "
        "kg load) for each prompt before it; recorded")] = None,
    max_triples: Annotated[int | None, typer.Option(
        help="text: at most this many --grounding triples per prompt")] = None,
    stream: Annotated[bool, typer.Option(help="print tokens as they come (one prompt, one sample)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON records")] = False,
    class_label: str | None = option(ImageGenRequest, "class_label",
                                     help="images: class index or name (conditional models)"),
    guidance_scale: float = option(ImageGenRequest, "guidance_scale",
                                   help="images: classifier-free guidance scale"),
    steps: int | None = option(ImageGenRequest, "steps", help="images: diffusion steps"),
    sampler: str = option(ImageGenRequest, "sampler", help="images: ddim, ddpm or dpmpp_2m"),
    interpolate: bool = option(ImageGenRequest, "interpolate",
                               help="images: walk the latent space (GAN, VAE)"),
    image: Annotated[Path | None, typer.Option(
        "--image", help="captioners: the image (PNG, JPEG...) to describe; greedy unless "
        "--temperature is given")] = None,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="images: where to write the PNG grid (default MODEL-N-SEED.png)")] = None,
    replay: Annotated[str | None, typer.Option(
        help="run the recorded generation with this id again from its record (model version, "
        "request, seed) and check the result against its content hash; exit 1 if it differs")] = None,
) -> None:
    """Generate text or images from a registered model; every output is recorded."""
    import genloop
    from genloop.errors import InvalidInput
    from genloop.generation.service import CaptionModel, ImageModel, TextModel

    if replay is not None:
        if model is not None:
            raise InvalidInput("--replay takes the generation id alone: the record names its model")
        _replay(replay, out_path, as_json)
        return
    if model is None:
        raise InvalidInput("give a model (name or name@N), or --replay GENERATION_ID")
    m = genloop.load(model)
    count = {"num_samples": num_samples} if num_samples else {}  # else the request's default
    if image is not None or isinstance(m, CaptionModel):
        _caption(ctx, m, image, prompt, count, seed=seed, temperature=temperature, top_k=top_k,
                 top_p=top_p, max_new_tokens=max_new_tokens, num_beams=num_beams, as_json=as_json)
        return
    if isinstance(m, ImageModel):
        _images(m, prompt, count, out_path, as_json, seed=seed, class_label=class_label,
                guidance_scale=guidance_scale, steps=steps, sampler=sampler,
                interpolate=interpolate)
        return
    assert isinstance(m, TextModel)  # a captioner went to _caption above
    prompts: str | list[str] = prompt[0] if len(prompt) == 1 else (prompt or "")
    request = m.request(prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty,
                        frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                        logit_bias=_logit_bias(logit_bias), stop=stop, seed=seed,
                        best_of=best_of, reward_model=reward_model, num_beams=num_beams,
                        few_shot=_few_shot(few_shot, shots, shot_template, shot_separator),
                        grounding=_grounding(grounding, max_triples), **count)
    if (stream and not as_json and len(request.prompts) == 1 and request.num_samples == 1
            and request.best_of is None):
        sys.stdout.write(request.prompts[0])
        for piece in m.stream(request=request):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    outputs = m.generate(request=request)
    if as_json:
        for o in outputs:
            print(json.dumps({"model": m.ref, "prompt": o.prompt, "text": o.text, "seed": o.seed,
                              "tokens": o.tokens, "finish_reason": o.finish_reason,
                              "content_hash": o.content_hash,
                              **({} if o.score is None else {"score": o.score})},
                             ensure_ascii=False))
        return
    for o in outputs:
        scored = "" if o.score is None else f" score {o.score:.4f}"
        out.print(f"[dim]---- {m.ref} seed {o.seed}{scored} ----[/]")
        out.print(o.prompt + o.text, markup=False, highlight=False)


def _images(m: Any, prompts: list[str], count: dict[str, int], out_path: Path | None,
            as_json: bool, **params: Any) -> None:
    """Images into one PNG grid (and JSON lines): a text-conditioned model draws each --prompt
    (several: one row each, seeds on the columns, all from the same --seed)."""
    from genloop.generation.text import resolve_seed

    texts = _image_prompts(m, prompts, params["class_label"])
    if len(texts) > 1:  # one seed for every row, so a column is one seed across the prompts
        params["seed"] = resolve_seed(params["seed"], count.get("num_samples", IMAGE_SAMPLES))
    results = [m.generate(**count, **params, **text) for text in texts]
    first = results[0]
    path = out_path or Path(f"{m.ref.replace('@', '-')}-{first.output.seed}.png")
    if len(results) == 1:
        first.save_grid(path, columns=len(first.records) if params["interpolate"] else None)
    else:
        _save_rows(results, path)
    for text, result in zip(texts, results, strict=True):
        unknown = list(result.output.unknown_words)
        if as_json:
            for r in result.records:
                print(json.dumps({"model": m.ref, "id": r.id, "seed": r.seed, "class": r.output,
                                  **text, **({"unknown_words": unknown} if text else {}),
                                  "file": r.file, "content_hash": r.content_hash},
                                 ensure_ascii=False))
        elif text:
            _image_table(result.records, text["prompt"])
        if unknown:
            err.print(f"[yellow]unknown words[/] (read as the unknown token): "
                      f"{', '.join(unknown)}", highlight=False)
    drawn, took = sum(len(r.records) for r in results), sum(r.output.timings["total_s"] for r in results)
    err.print(f"{drawn} images from {m.ref} (seed {first.output.seed}, {took:.2f} s) → "
              f"[bold]{path}[/]", highlight=False)


def _save_rows(results: list[Any], path: Path) -> None:
    """Several prompts' images as one grid, a row per prompt, signed as one grid of them all."""
    import numpy as np

    from genloop.generation.image import save_grid
    from genloop.generation.provenance import grid_signer

    first = results[0]
    records = [r for result in results for r in result.records]
    request = {**first.request.model_dump(mode="json"),
               "prompt": [result.request.prompt for result in results]}
    provenance = {"model": first.model, "seed": first.output.seed, "request": request,
                  "seeds": [r.seed for r in records],
                  "content_hashes": [r.content_hash for r in records],
                  "generations": [r.id for r in records]}
    sign = grid_signer(first.model, first.output.seed, request, records, first.dataset_hash)
    images = np.concatenate([result.output.images for result in results])
    save_grid(images, path, provenance, columns=len(first.records), sign=sign)


def _image_prompts(m: Any, prompts: list[str], class_label: str | None) -> list[dict[str, str]]:
    """An image model's ``--prompt``s: the sentences a text-conditioned model draws ([{}] for
    the others, which take --class)."""
    from genloop.errors import InvalidInput

    if m.family.reads != "prompt":
        if prompts:
            raise InvalidInput(f"--prompt: {m.ref} is a {m.family.name} model, it draws classes, "
                               "not sentences: give --class")
        return [{}]
    if class_label is not None:
        raise InvalidInput(f"--class: {m.ref} draws what a sentence says: give --prompt")
    if not prompts:
        raise InvalidInput(f"--prompt: {m.ref} draws what a sentence says: give one "
                           "(e.g. 'a small red circle at the top left'; repeat for rows)")
    return [{"prompt": p} for p in prompts]


def _image_table(records: list[Any], prompt: str) -> None:
    from rich.table import Table

    table = Table(title=prompt, title_justify="left")
    for column in ("#", "seed", "generation", "content hash"):
        table.add_column(column)
    for i, r in enumerate(records):
        table.add_row(str(i), str(r.seed), r.id, r.content_hash[:16])
    out.print(table)


def _caption(ctx: typer.Context, m: Any, image: Path | None, prompts: list[str],
             count: dict[str, int], *,
             as_json: bool, **params: Any) -> None:
    """``--image FILE`` to a captioner: its captions printed, each recorded. Only the options
    given are passed: the rest are the captioner's own defaults (greedy, its caption length)."""
    from genloop.errors import InvalidInput
    from genloop.generation.service import CaptionModel

    if not isinstance(m, CaptionModel):
        raise InvalidInput(f"--image: {m.ref} is a {m.family.name} model, it does not read "
                           "images (a captioner does)")
    if image is None:
        raise InvalidInput(f"--image: {m.ref} is a captioner: give the image to describe")
    if prompts:
        raise InvalidInput(f"--prompt: {m.ref} describes an image, it takes no prompt")
    if not image.is_file():
        raise InvalidInput(f"--image: {image} is not a file")
    params = {k: v for k, v in params.items() if v is not None and getattr(
        ctx.get_parameter_source(k), "name", "DEFAULT") != "DEFAULT"}
    outputs = m.generate(image, **count, **params)
    for o in outputs:
        if as_json:
            print(json.dumps({"model": m.ref, "image": str(image), "text": o.text, "seed": o.seed,
                              "tokens": o.tokens, "content_hash": o.content_hash},
                             ensure_ascii=False))
        else:
            out.print(o.text, markup=False, highlight=False)


def _replay(generation_id: str, out_path: Path | None, as_json: bool) -> None:
    from genloop.generation.image import save_png
    from genloop.generation.provenance import signed_image_png
    from genloop.generation.service import replay

    again = replay(generation_id)
    r = again.record
    if again.pixels is not None:
        path = out_path or Path(f"replay-{r.id}.png")
        save_png(path, again.pixels, {"model": r.model, "seed": r.seed, "request": r.request,
                                      "content_hash": again.content_hash},
                 sign=lambda png: signed_image_png(r, png, content=again.content_hash))
        shown = f"→ [bold]{path}[/]"
    else:
        shown = ""
        if not as_json:
            out.print(r.request.get("prompt", "") + (again.output or ""), markup=False, highlight=False)
    if as_json:
        print(json.dumps({"id": r.id, "model": r.model, "seed": r.seed, "text": again.output,
                          "content_hash": again.content_hash, "recorded": r.content_hash,
                          "matches": again.matches}, ensure_ascii=False))
    if again.matches:
        err.print(f"replayed {r.id} ({r.model}, seed {r.seed}): same content hash {shown}",
                  highlight=False)
        return
    err.print(f"[bold red]replayed {r.id} differs from its record:[/] {again.content_hash} != "
              f"{r.content_hash} (another machine or precision path?) {shown}", highlight=False)
    raise typer.Exit(1)


def _few_shot(source: str | None, shots: int | None, template: str,
              separator: str) -> dict[str, Any] | None:
    """``--few-shot SRC --shots K`` → the request's ``few_shot`` (None without --few-shot)."""
    from genloop.errors import InvalidInput

    if source is None:
        if shots is not None:
            raise InvalidInput("--shots: give --few-shot DATASET_OR_FILE to draw them from")
        return None
    return {"source": source, "template": template, "separator": separator,
            **({} if shots is None else {"k": shots})}


def _grounding(graph: str | None, max_triples: int | None) -> dict[str, Any] | None:
    """``--grounding GRAPH --max-triples K`` → the request's ``grounding``."""
    from genloop.errors import InvalidInput

    if graph is None:
        if max_triples is not None:
            raise InvalidInput("--max-triples: give --grounding GRAPH to retrieve them from")
        return None
    return {"graph": graph, **({} if max_triples is None else {"max_triples": max_triples})}


def _logit_bias(pairs: list[str]) -> dict[int, float] | None:
    """``--logit-bias 12=-100 --logit-bias 40=5`` → {12: -100.0, 40: 5.0}."""
    from genloop.errors import InvalidInput

    bias: dict[int, float] = {}
    for pair in pairs:
        token, _, value = pair.partition("=")
        try:
            bias[int(token)] = float(value)
        except ValueError:
            raise InvalidInput(f"--logit-bias {pair!r}: give TOKEN_ID=BIAS, e.g. 12=-100") from None
    return bias or None
