"""The ``genloop`` command: parse, call the Python API, format. No logic of its own.

Every ``GenloopError`` becomes one line on stderr and its exit code; nothing half-done is left.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genloop.errors import GenloopError

app = typer.Typer(
    name="genloop",
    help="genloop — train, generate, evaluate and own your generative models.\n\n"
    "Start with:  genloop quickstart",
    epilog="Examples:\n\n    genloop quickstart\n\n    genloop train shakespeare-char\n\n"
    "    genloop generate shakespeare-char --prompt 'ROMEO:' --seed 1",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Prepare and inspect datasets.", no_args_is_help=True,
                       epilog="Examples:\n\n    genloop data prepare tinyshakespeare\n\n"
                       "    genloop data list")
models_app = typer.Typer(help="List and inspect registered model versions.", no_args_is_help=True,
                         epilog="Examples:\n\n    genloop models list\n\n"
                         "    genloop models show shakespeare-char@1")
keys_app = typer.Typer(help="Create, list and revoke API keys for `genloop serve`.", no_args_is_help=True,
                       epilog="Examples:\n\n    genloop keys create laptop\n\n    genloop keys list\n\n"
                       "    genloop keys revoke laptop")
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(keys_app, name="keys")

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def faced(fn: F) -> F:
    """Turn genloop errors into one red line and the error's exit code."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except GenloopError as e:
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------- train


class TrainView:
    """A progress bar with loss, tokens/s and ETA, plus a line per evaluation."""

    def __init__(self, console: Console):
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss [cyan]{task.fields[loss]}[/]"),
            TextColumn("[green]{task.fields[speed]}[/] {task.fields[unit]}/s"),
            TextColumn("eta {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def __call__(self, p: Any) -> None:
        if p.phase in ("data", "build", "register"):
            self.console.print(f"[dim]{p.phase}:[/] {p.message}", highlight=False)
            return
        if p.phase == "train":
            if self.task is None:
                self.bar.start()
                unit = "tok" if p.unit == "tokens" else "img"
                self.task = self.bar.add_task("train", total=p.steps, loss="-", speed="-", eta="-",
                                              unit=unit)
            eta = f"{int(p.eta_s // 60)}m{int(p.eta_s % 60):02d}s" if p.eta_s else "-"
            self.bar.update(self.task, completed=p.step, loss=f"{p.loss:.4f}",
                            speed=f"{p.tokens_per_s:,.0f}", eta=eta)
        elif p.phase == "eval" and p.val_loss is not None:
            self.bar.console.print(f"step {p.step:>6}  val loss {p.val_loss:.4f}")
        elif p.phase == "eval":
            self.stop()
            self.console.print(f"[dim]eval:[/] {p.message}")
        elif p.phase == "done":
            self.stop()

    def stop(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None


@app.command(epilog="Examples:\n\n"
             "    genloop train shakespeare-char\n\n"
             "    genloop train my.yaml --set train.steps=500 --set model.preset=tiny\n\n"
             "    genloop train shakespeare-char --print-recipe\n\n"
             "    genloop train mnist-diffusion --set train.steps=2000\n\n"
             "    genloop train --resume 3f2a9c1b7d4e")
@faced
def train(
    recipe: Annotated[str | None, typer.Argument(
        help="recipe YAML file or built-in name (shakespeare-char, tang-poems, digits, mnist-diffusion, "
        "mnist-gan, mnist-vae, ...)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override: section.key=value")] = [],
    name: Annotated[str | None, typer.Option(help="model name to register")] = None,
    print_recipe: Annotated[bool, typer.Option(
        "--print-recipe", help="print the resolved recipe and exit")] = False,
    resume: Annotated[str | None, typer.Option(help="resume this run id from its last checkpoint")] = None,
) -> None:
    """Train a model from a recipe and register it as **name@N**."""
    from genloop.training.loop import train as run_training
    from genloop.training.recipe import load_recipe

    overrides = list(set_) + ([f"name={name}"] if name else [])
    if resume is None and recipe is None:
        raise GenloopError("give a recipe (file or built-in name) or --resume RUN_ID")
    if resume is None:
        resolved = load_recipe(recipe, overrides)
        if print_recipe:
            out.print(resolved.to_yaml(), end="", highlight=False, markup=False)
            return
    view = TrainView(err)
    try:
        result = run_training(resolved if resume is None else None, resume=resume, on_progress=view)
    finally:
        view.stop()
    show_result(result)


RESULT_KEYS = ("val_loss", "bits_per_char", "perplexity", "distinct_2", "fid", "kid", "precision",
               "recall", "sample_accuracy", "test_nelbo_nats", "test_iw_nll_nats", "test_accuracy",
               "train_tokens_per_s", "train_images_per_s", "train_time_s")


def show_result(result: Any) -> None:
    table = Table(title=f"{result.model_ref or 'run ' + result.run_id}", show_header=False)
    for k in RESULT_KEYS:
        if k in result.metrics:
            v = result.metrics[k]
            table.add_row(k, f"{v:,.0f}" if k.endswith("_per_s") else f"{v:,.4f}")
    out.print(table)
    for s in result.samples[:2]:
        if s.endswith(".png"):
            out.print(f"[dim]samples:[/] {s}", highlight=False)
            continue
        out.print("[dim]---- sample ----[/]")
        out.print(s, markup=False, highlight=False)
    out.print(f"[dim]run:[/] {result.run_dir}")


# ------------------------------------------------------------------------------------- generate


@app.command(epilog="Examples:\n\n"
             "    genloop generate shakespeare-char --prompt 'ROMEO:' --seed 1\n\n"
             "    genloop generate python-docs@1 --prompt 'The ' -n 3 --temperature 0.7 --top-k 20\n\n"
             "    genloop generate tang-poems --prompt $'春望\\n' --stop $'\\n\\n' --no-stream --json\n\n"
             "    genloop generate mnist-diffusion -n 64 --class 3 --steps 50 --out threes.png\n\n"
             "    genloop generate mnist-vae -n 16 --interpolate --seed 4 --out walk.png")
@faced
def generate(
    model: Annotated[str, typer.Argument(help="model version: name (newest) or name@N")],
    prompt: Annotated[list[str], typer.Option("--prompt", "-p", help="prompt (repeat for a batch)")] = [],
    max_new_tokens: Annotated[int, typer.Option(help="tokens to generate")] = 200,
    temperature: Annotated[float, typer.Option(help="0 = greedy")] = 0.8,
    top_k: Annotated[int | None, typer.Option(help="keep the k most likely tokens")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus sampling mass")] = None,
    repetition_penalty: Annotated[float, typer.Option(help="> 1 discourages repeats")] = 1.0,
    stop: Annotated[list[str], typer.Option(help="stop string (repeatable)")] = [],
    seed: Annotated[int | None, typer.Option(help="same seed + same request = same output")] = None,
    num_samples: Annotated[int | None, typer.Option(
        "--num-samples", "-n", help="samples per prompt (text, default 1) or images (default 16)")] = None,
    stream: Annotated[bool, typer.Option(help="print tokens as they come (one prompt, one sample)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON records")] = False,
    class_label: Annotated[str | None, typer.Option(
        "--class", help="images: class index or name (conditional models)")] = None,
    guidance: Annotated[float, typer.Option(help="images: classifier-free guidance scale")] = 2.0,
    steps: Annotated[int | None, typer.Option(help="images: diffusion steps")] = None,
    sampler: Annotated[str, typer.Option(help="images: ddim or ddpm")] = "ddim",
    interpolate: Annotated[bool, typer.Option(help="images: walk the latent space (GAN, VAE)")] = False,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="images: where to write the PNG grid (default <model>-<seed>.png)")] = None,
) -> None:
    """Generate text or images from a registered model; every output is recorded."""
    import genloop
    from genloop.generation.service import ImageModel

    m = genloop.load(model)
    if isinstance(m, ImageModel):
        result = m.generate(num_samples=num_samples or 16, seed=seed, class_label=class_label,
                            guidance_scale=guidance, steps=steps, sampler=sampler,
                            interpolate=interpolate)
        path = out_path or Path(f"{m.ref.replace('@', '-')}-{result.output.seed}.png")
        result.save_grid(path, columns=len(result.records) if interpolate else None)
        if as_json:
            for r in result.records:
                print(json.dumps({"model": m.ref, "id": r.id, "seed": r.seed, "class": r.output,
                                  "file": r.file, "content_hash": r.content_hash}))
        err.print(f"{len(result.records)} images from {m.ref} (seed {result.output.seed}, "
                  f"{result.output.timings['total_s']:.2f} s) → [bold]{path}[/]", highlight=False)
        return
    num_samples = num_samples or 1
    prompts: str | list[str] = prompt[0] if len(prompt) == 1 else (prompt or "")
    params = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                  repetition_penalty=repetition_penalty, stop=stop, seed=seed,
                  num_samples=num_samples)
    request = m.request(prompts, **params)
    if stream and not as_json and len(request.prompts) == 1 and num_samples == 1:
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
                              "content_hash": o.content_hash}, ensure_ascii=False))
        return
    for o in outputs:
        out.print(f"[dim]---- {m.ref} seed {o.seed} ----[/]")
        out.print(o.prompt + o.text, markup=False, highlight=False)


# ----------------------------------------------------------------------------------------- eval


@app.command(name="eval", epilog="Examples:\n\n    genloop eval shakespeare-char@1\n\n"
             "    genloop eval python-docs --samples 8\n\n"
             "    genloop eval mnist-diffusion --samples 1000 --steps 50 --guidance 2")
@faced
def eval_(
    model: Annotated[str, typer.Argument(help="model version: name or name@N")],
    samples: Annotated[int | None, typer.Option(
        help="samples for the diversity metrics (text, 4) or FID/KID/PR (images, 1000)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the samples")] = 0,
    steps: Annotated[int | None, typer.Option(help="images: diffusion steps")] = None,
    sampler: Annotated[str, typer.Option(help="images: ddim or ddpm")] = "ddim",
    guidance: Annotated[float, typer.Option(help="images: classifier-free guidance scale")] = 1.0,
    importance_samples: Annotated[int, typer.Option(help="VAE: importance samples for the NLL")] = 0,
    feature_extractor: Annotated[str | None, typer.Option(
        help="images: classifier name@N for the features (default: the dataset's own)")] = None,
) -> None:
    """Evaluate a model on its dataset; store the metrics on the version."""
    from genloop.evaluation.run import evaluate_version
    from genloop.generation.service import ImageModel, load

    options: dict[str, Any] = {}
    if isinstance(load(model), ImageModel):
        options = dict(steps=steps, sampler=sampler, guidance_scale=guidance,
                       importance_samples=importance_samples, feature_extractor=feature_extractor,
                       grid=0)
    metrics = evaluate_version(model, num_samples=samples, seed=seed, **options)
    table = Table(title=model, show_header=False)
    for k, v in metrics.items():
        table.add_row(k, f"{v:,.4f}")
    out.print(table)


# ---------------------------------------------------------------------------------------- serve


@app.command(epilog="Examples:\n\n"
             "    genloop keys create laptop      # prints a key once\n\n"
             "    genloop serve                   # http://127.0.0.1:8000 (studio at /)\n\n"
             "    genloop serve --port 9000 --max-batch 32 --rate-limit 120\n\n"
             "    genloop serve --no-auth         # loopback only, for local development\n\n"
             "Then: OpenAI(base_url='http://127.0.0.1:8000/v1', api_key=KEY)")
@faced
def serve(
    host: Annotated[str, typer.Option(help="address to bind (127.0.0.1: this machine only)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
    auth: Annotated[bool, typer.Option("--auth/--no-auth",
                                       help="require an API key (off: loopback addresses only)")] = True,
    max_batch: Annotated[int, typer.Option(help="sequences decoded together per text model")] = 16,
    queue: Annotated[int, typer.Option(help="sequences waiting per text model before 503")] = 32,
    rate_limit: Annotated[int, typer.Option(help="requests per key per minute (0: no limit)")] = 600,
    max_tokens: Annotated[int, typer.Option(help="largest max_tokens a request may ask")] = 2048,
    models_loaded: Annotated[int, typer.Option(help="model versions kept loaded (LRU)")] = 4,
    threads: Annotated[int, typer.Option(
        help="torch threads per forward pass (1 suits small models: the rest serve HTTP)")] = 1,
    preload: Annotated[list[str], typer.Option(help="load these models before serving")] = [],
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
) -> None:
    """Serve every registered model over an OpenAI-compatible HTTP API, with the studio at /."""
    from genloop.errors import InvalidInput, validation_message
    from genloop.generation.service import load
    from genloop.serving.app import run
    from genloop.serving.settings import ServeConfig
    from genloop.store import Store

    try:
        config = ServeConfig(host=host, port=port, auth=auth, max_batch=max_batch, max_queue=queue,
                             rate_limit=rate_limit, max_tokens=max_tokens,
                             models_loaded=models_loaded, threads=threads)
    except ValueError as e:
        raise InvalidInput(validation_message(e)) from None
    store = Store()
    for ref in preload:
        load(ref, store, models_loaded)
    if config.auth and not any(k.revoked_at is None for k in store.list_keys()):
        err.print("[yellow]no API key yet:[/] create one with [bold]genloop keys create NAME[/]")
    if not config.auth:
        err.print("[bold red]AUTH IS OFF:[/] every model and every generation is open to anyone "
                  f"who can reach {host}:{port}")
    out.print(f"genloop: serving on [bold]http://{host}:{port}[/] (studio at /, API at /v1)")
    run(config, log_level=log_level)


# ---------------------------------------------------------------------------------------- models


@models_app.command("list", epilog="Example:\n\n    genloop models list")
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


@models_app.command("show", epilog="Example:\n\n    genloop models show shakespeare-char@1")
@faced
def models_show(model: Annotated[str, typer.Argument(help="name or name@N")]) -> None:
    """Print a version's model card."""
    from genloop.store import Store

    v = Store().resolve(model)
    card = Path(v.path) / "card.md"
    out.print(Markdown(card.read_text(encoding="utf-8")) if card.exists() else f"{v.ref}: no card")


def fmt(v: Any) -> str:
    return "" if v is None else f"{v:.4f}"


# ------------------------------------------------------------------------------------------ keys


@keys_app.command("create", epilog="Example:\n\n    genloop keys create laptop")
@faced
def keys_create(name: Annotated[str, typer.Argument(help="a name to recognise the key by")]) -> None:
    """Create an API key and print its secret, once: only its SHA-256 is stored."""
    from genloop.store import Store

    key, secret = Store().create_key(name)
    print(secret)
    err.print(f"API key [bold]{key.name}[/] ({key.id}) created. Copy the secret above now: it is "
              "not shown again. Send it as `Authorization: Bearer <secret>`.", highlight=False,
              soft_wrap=True)


@keys_app.command("list", epilog="Example:\n\n    genloop keys list")
@faced
def keys_list() -> None:
    """Every API key (never its secret), newest first."""
    from genloop.store import Store

    table = Table("id", "name", "prefix", "created", "revoked")
    for k in Store().list_keys():
        table.add_row(k.id, k.name, f"{k.prefix}…", k.created_at.strftime("%Y-%m-%d %H:%M"),
                      k.revoked_at.strftime("%Y-%m-%d %H:%M") if k.revoked_at else "")
    out.print(table)


@keys_app.command("revoke", epilog="Examples:\n\n    genloop keys revoke laptop\n\n"
                  "    genloop keys revoke 3f2a9c1b7d4e")
@faced
def keys_revoke(key: Annotated[str, typer.Argument(help="the key's id or name")]) -> None:
    """Revoke an API key: requests with it get 401 from now on."""
    from genloop.store import Store

    k = Store().revoke_key(key)
    out.print(f"revoked API key {k.name} ({k.id})", highlight=False)


# ------------------------------------------------------------------------------------------ data


IMAGE_BUILTINS = ("digits", "shapes", "mnist", "fashion-mnist")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def looks_like_images(source: str) -> bool:
    """An image built-in, an .npz, or a folder holding image files (at any depth)."""
    path = Path(source)
    if source in IMAGE_BUILTINS or path.suffix == ".npz":
        return True
    return path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.rglob("*"))


@data_app.command("prepare", epilog="Examples:\n\n    genloop data prepare tinyshakespeare\n\n"
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
    tokenizer: Annotated[str, typer.Option(help="text: char or bpe")] = "char",
    vocab_size: Annotated[int, typer.Option(help="text: BPE vocabulary size")] = 2048,
    field: Annotated[str, typer.Option(help="text: .jsonl field holding the text")] = "text",
    name: Annotated[str | None, typer.Option(help="dataset name")] = None,
    image_size: Annotated[int | None, typer.Option(help="images: resize to this square side")] = None,
    channels: Annotated[int | None, typer.Option(help="images: 1 (grey) or 3 (RGB)")] = None,
) -> None:
    """Read, clean and split a corpus or an image collection into an immutable, hashed dataset."""
    from genloop.data.images import ImageDataConfig
    from genloop.data.text import TextDataConfig
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


@data_app.command("list", epilog="Example:\n\n    genloop data list")
@faced
def data_list() -> None:
    """Datasets prepared in this workspace."""
    from genloop.store import Store

    table = Table("name", "hash", "kind", "path")
    for d in Store().list_datasets():
        table.add_row(d.name, d.hash[:16], d.kind, d.path)
    out.print(table)


# ------------------------------------------------------------------------------------ quickstart


@app.command(epilog="Examples:\n\n    genloop quickstart\n\n    genloop quickstart --steps 200\n\n"
             "    genloop quickstart --no-images")
@faced
def quickstart(
    steps: Annotated[int | None, typer.Option(help="text training steps (default: the recipe's)")] = None,
    image_steps: Annotated[int | None, typer.Option(
        help="image training steps (default: the digits recipe's)")] = None,
    images: Annotated[bool, typer.Option(help="also train a digit generator and write a grid")] = True,
    grid: Annotated[Path, typer.Option(help="where to write the digit grid")] = Path("quickstart-digits.png"),
) -> None:
    """Train a small GPT on the Python docs and a digit generator (offline, a few minutes each),
    evaluate, register, sample."""
    import genloop
    from genloop.training.loop import train as run_training
    from genloop.training.recipe import load_recipe

    runs = [("quickstart", [f"train.steps={steps}"] if steps else [])]
    if images:
        runs.append(("digits", [f"train.steps={image_steps}"] if image_steps else []))
    refs = []
    for name, overrides in runs:
        recipe = load_recipe(name, overrides)
        err.print(f"[bold]genloop quickstart[/]: {recipe.model.family} ({recipe.model.preset}) on "
                  f"{recipe.data.source}, {recipe.train.steps} steps")
        view = TrainView(err)
        try:
            result = run_training(recipe, on_progress=view)
        finally:
            view.stop()
        show_result(result)
        refs.append(result.model_ref)
    if images:
        digits = genloop.load(refs[1])
        drawn = digits.generate(num_samples=40, seed=1, guidance_scale=2.0)
        drawn.save_grid(grid, columns=10)
        out.print(f"[dim]digit grid (each column one class, 0-9):[/] {grid}", highlight=False)
    out.print("\n[bold]Next:[/]")
    nexts = [f"genloop generate {refs[0]} --prompt 'The ' --seed 1", f"genloop models show {refs[0]}"]
    if images:
        nexts.append(f"genloop generate {refs[1]} -n 16 --class 7 --out sevens.png")
    nexts += ["genloop keys create me && genloop serve      # API + studio at http://127.0.0.1:8000",
              "genloop train shakespeare-char", "genloop train mnist-diffusion"]
    for cmd in nexts:
        out.print(f"  {cmd}", highlight=False, markup=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
