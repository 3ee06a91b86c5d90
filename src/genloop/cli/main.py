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
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")

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
            TextColumn("[green]{task.fields[speed]}[/] tok/s"),
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
                self.task = self.bar.add_task("train", total=p.steps, loss="-", speed="-", eta="-")
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
             "    genloop train --resume 3f2a9c1b7d4e")
@faced
def train(
    recipe: Annotated[str | None, typer.Argument(
        help="recipe YAML file or built-in name (shakespeare-char, tang-poems, quickstart, ...)")] = None,
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


def show_result(result: Any) -> None:
    table = Table(title=f"{result.model_ref or 'run ' + result.run_id}", show_header=False)
    for k in ("val_loss", "bits_per_char", "perplexity", "distinct_2", "train_tokens_per_s",
              "train_time_s"):
        if k in result.metrics:
            table.add_row(k, f"{result.metrics[k]:,.4f}" if k != "train_tokens_per_s"
                          else f"{result.metrics[k]:,.0f}")
    out.print(table)
    for s in result.samples[:2]:
        out.print("[dim]---- sample ----[/]")
        out.print(s, markup=False, highlight=False)
    out.print(f"[dim]run:[/] {result.run_dir}")


# ------------------------------------------------------------------------------------- generate


@app.command(epilog="Examples:\n\n"
             "    genloop generate shakespeare-char --prompt 'ROMEO:' --seed 1\n\n"
             "    genloop generate python-docs@1 --prompt 'The ' -n 3 --temperature 0.7 --top-k 20\n\n"
             "    genloop generate tang-poems --prompt $'春望\\n' --stop $'\\n\\n' --no-stream --json")
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
    num_samples: Annotated[int, typer.Option("--num-samples", "-n", help="samples per prompt")] = 1,
    stream: Annotated[bool, typer.Option(help="print tokens as they come (one prompt, one sample)")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON records")] = False,
) -> None:
    """Generate text from a registered model; every output is recorded."""
    import genloop

    m = genloop.load(model)
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
             "    genloop eval python-docs --samples 8")
@faced
def eval_(
    model: Annotated[str, typer.Argument(help="model version: name or name@N")],
    samples: Annotated[int, typer.Option(help="samples for the diversity metrics")] = 4,
    seed: Annotated[int, typer.Option(help="seed of the samples")] = 0,
) -> None:
    """Evaluate a model on its dataset's validation split; store the metrics on the version."""
    from genloop.evaluation.run import evaluate_version

    metrics = evaluate_version(model, num_samples=samples, seed=seed)
    table = Table(title=model, show_header=False)
    for k, v in metrics.items():
        table.add_row(k, f"{v:,.4f}")
    out.print(table)


# ---------------------------------------------------------------------------------------- models


@models_app.command("list", epilog="Example:\n\n    genloop models list")
@faced
def models_list() -> None:
    """All registered versions with their key metrics."""
    from genloop.store import Store

    table = Table("model", "family", "val loss", "bits/char", "created", "parent")
    for v in Store().list_models():
        m = v.metrics or {}
        table.add_row(v.ref, v.family, fmt(m.get("val_loss")), fmt(m.get("bits_per_char")),
                      v.created_at.strftime("%Y-%m-%d %H:%M"), v.parent or "")
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


# ------------------------------------------------------------------------------------------ data


@data_app.command("prepare", epilog="Examples:\n\n    genloop data prepare tinyshakespeare\n\n"
                  "    genloop data prepare notes.jsonl --field body --tokenizer bpe --vocab-size 4096\n\n"
                  "    genloop data prepare ./my_texts/")
@faced
def data_prepare(
    source: Annotated[str, typer.Argument(
        help="python-docs | tinyshakespeare | tang-poems | a .txt, .jsonl or folder")],
    tokenizer: Annotated[str, typer.Option(help="char or bpe")] = "char",
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size")] = 2048,
    field: Annotated[str, typer.Option(help=".jsonl field holding the text")] = "text",
    name: Annotated[str | None, typer.Option(help="dataset name")] = None,
) -> None:
    """Read, clean, split and tokenize a corpus into an immutable, hashed dataset."""
    from genloop.data.text import TextDataConfig, prepare_text
    from genloop.errors import RecipeError, validation_message
    from genloop.store import Store

    try:
        config = TextDataConfig(source=source, tokenizer=tokenizer, vocab_size=vocab_size,
                                field=field, name=name)
    except ValueError as e:
        raise RecipeError(validation_message(e)) from None
    ds = prepare_text(config, progress=lambda m: err.print(f"[dim]{m}[/]", highlight=False))
    Store().add_dataset(ds.name, ds.hash, "text", str(ds.path), ds.meta)
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


@app.command(epilog="Examples:\n\n    genloop quickstart\n\n    genloop quickstart --steps 200")
@faced
def quickstart(
    steps: Annotated[int | None, typer.Option(help="training steps (default: the recipe's)")] = None,
) -> None:
    """Train a small GPT on the Python docs (offline, a few minutes), evaluate, register, sample."""
    from genloop.training.loop import train as run_training
    from genloop.training.recipe import load_recipe

    recipe = load_recipe("quickstart", [f"train.steps={steps}"] if steps else [])
    err.print(f"[bold]genloop quickstart[/]: {recipe.model.family} ({recipe.model.preset}) on "
              f"{recipe.data.source}, {recipe.train.steps} steps")
    view = TrainView(err)
    try:
        result = run_training(recipe, on_progress=view)
    finally:
        view.stop()
    show_result(result)
    ref = result.model_ref
    out.print("\n[bold]Next:[/]")
    for cmd in (f"genloop generate {ref} --prompt 'The ' --seed 1",
                f"genloop models show {ref}",
                "genloop train shakespeare-char",
                "genloop train tang-poems"):
        out.print(f"  {cmd}", highlight=False, markup=False)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
