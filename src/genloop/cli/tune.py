"""``genloop tune``: a registered model and its feedback (or a JSON Lines file) in, its next
version out (``name@N+1``, the parent in its lineage), with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genloop.cli.console import command_app, err, faced, out
from genloop.cli.views import TrainView, show_result
from genloop.errors import GenloopError

app = command_app()


@app.command(epilog="Examples:\n\n"
             "    genloop tune poems --from-feedback --objective dpo\n\n"
             "    genloop tune poems@2 --from-feedback --objective kto --threshold 4\n\n"
             "    genloop tune poems --data liked.jsonl --objective sft --epochs 2\n\n"
             "    genloop tune poems --data prefs.jsonl --objective dpo --beta 0.2 --steps 300\n\n"
             "    genloop tune poems --data prefs.jsonl --objective dpo --print-recipe\n\n"
             "--data files, one JSON object per line: sft `{\"prompt\", \"completion\"}`; "
             "dpo `{\"prompt\", \"chosen\", \"rejected\"}`; kto `{\"prompt\", \"completion\", "
             "\"label\": true|false}`.")
@faced
def tune(
    model: Annotated[str, typer.Argument(help="the model to tune: name (its newest version) or name@N")],
    objective: Annotated[str, typer.Option(
        help="sft: learn the liked completions; dpo: prefer chosen over rejected; kto: "
        "desirable over undesirable completions")],
    data: Annotated[Path | None, typer.Option(help="a .jsonl file of the objective's records")] = None,
    from_feedback: Annotated[bool, typer.Option(
        "--from-feedback", help="build the records from the model's ratings and preferences")] = False,
    threshold: Annotated[int, typer.Option(
        help="--from-feedback: a rating at or above it is liked, below it disliked")] = 4,
    steps: Annotated[int | None, typer.Option(help="optimizer steps (default: from --epochs)")] = None,
    epochs: Annotated[float | None, typer.Option(
        help="passes over the training records (default 3)")] = None,
    lr: Annotated[float | None, typer.Option(help="learning rate (default: the parent's / 10)")] = None,
    beta: Annotated[float | None, typer.Option(
        help="dpo, kto: how far the model may move from its parent (default 0.1)")] = None,
    sft_weight: Annotated[float | None, typer.Option(
        help="dpo: add this weight times the chosen completions' NLL (RPO; default 0)")] = None,
    desirable_weight: Annotated[float | None, typer.Option(
        help="kto: weight of the liked (default 1)")] = None,
    undesirable_weight: Annotated[float | None, typer.Option(
        help="kto: weight of the disliked (default 1)")] = None,
    batch_size: Annotated[int | None, typer.Option(help="records per step (default: the parent's)")] = None,
    name: Annotated[str | None, typer.Option(help="register under this name (default: the model's)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed (default: the parent's)")] = None,
    print_recipe: Annotated[bool, typer.Option(
        "--print-recipe", help="print the tuning recipe and exit")] = False,
) -> None:
    """Tune a model on feedback or a file (sft, dpo or kto) and register it as **name@N+1**."""
    from genloop.store import Store
    from genloop.training.loop import train
    from genloop.training.tune import data_section, tune_recipe

    if (data is None) == (not from_feedback):
        raise GenloopError("give --data FILE or --from-feedback (one of them)")
    store = Store()
    if from_feedback:
        section = _feedback_section(store, model, objective, threshold)
    else:
        assert data is not None
        section = data_section(objective, data)
    recipe = tune_recipe(model, section, objective, steps=steps, epochs=epochs, lr=lr,
                         batch_size=batch_size, beta=beta, seed=seed, name=name, store=store,
                         desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
                         sft_weight=sft_weight)
    if print_recipe:
        out.print(recipe.to_yaml(), end="", highlight=False, markup=False)
        return
    view = TrainView(err)
    try:
        result = train(recipe, on_progress=view)
    finally:
        view.stop()
    show_result(result)


def _feedback_section(store: Any, model: str, objective: str, threshold: int) -> dict[str, Any]:
    """The data section of the model's feedback for ``objective`` (feedback/datasets.py)."""
    import importlib

    try:  # by name: feedback/datasets.py is built beside this command (issue 11, part A)
        datasets = importlib.import_module("genloop.feedback.datasets")
    except ImportError:
        raise GenloopError("--from-feedback needs genloop.feedback.datasets, which this build "
                           "lacks: tune with --data FILE") from None
    built = datasets.feedback_data(store, model, objective, threshold=threshold)
    counts = ", ".join(f"{k} {v}" for k, v in built.summary.items() if isinstance(v, int | float))
    err.print(f"[dim]feedback:[/] {counts} → {built.path}", highlight=False)
    return dict(built.data)
