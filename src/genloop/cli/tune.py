"""``genloop tune``: a registered model and its feedback (or a JSON Lines file) in, its next
version out (``name@N+1``, the parent in its lineage), with a progress bar."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from genloop.cli.console import command_app, err, faced, out
from genloop.cli.views import TrainView, show_result
from genloop.errors import GenloopError, InvalidInput

app = command_app()


@app.command(epilog="Examples:\n\n"
             "    genloop tune poems --from-feedback --objective dpo\n\n"
             "    genloop tune poems@2 --from-feedback --objective kto --threshold 4\n\n"
             "    genloop tune poems --data liked.jsonl --objective sft --epochs 2\n\n"
             "    genloop tune poems --data prefs.jsonl --objective dpo --beta 0.2 --steps 300\n\n"
             "    genloop tune poems --data prefs.jsonl --objective dpo --print-recipe\n\n"
             "    genloop tune poems --data liked.jsonl --objective sft --lora-rank 8\n\n"
             "--data files, one JSON object per line: sft `{\"prompt\", \"completion\"}` or "
             "OpenAI's `{\"messages\": [...]}`; dpo `{\"prompt\", \"chosen\", \"rejected\"}` or "
             "OpenAI's `{\"input\": {\"messages\"}, \"preferred_output\", "
             "\"non_preferred_output\"}`; kto `{\"prompt\", \"completion\", \"label\": "
             "true|false}`. TRL's message lists are taken too, rendered with the model's chat "
             "template.")
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
    lora_rank: Annotated[int | None, typer.Option(
        help="tune LoRA adapters of this rank instead of every weight (the version holds only "
        "them; `genloop merge` folds them in)")] = None,
    lora_alpha: Annotated[float | None, typer.Option(
        help="--lora-rank: the update's scale is alpha / rank (default 2 × rank)")] = None,
    lora_targets: Annotated[str | None, typer.Option(
        help="--lora-rank: comma-separated modules to adapt (default: the family's, e.g. gpt "
        "qkv,proj,fc)")] = None,
    lora_save: Annotated[str | None, typer.Option(
        help="--lora-rank: comma-separated modules trained whole beside the adapters and stored "
        "with them (e.g. wte,ln_f)")] = None,
) -> None:
    """Tune a model on feedback or a file (sft, dpo or kto) and register it as **name@N+1**."""
    from genloop.store import Store
    from genloop.training.loop import train
    from genloop.training.tune import check_settings, tune_recipe

    if (data is None) == (not from_feedback):
        raise GenloopError("give --data FILE or --from-feedback (one of them)")
    lora = lora_section(lora_rank, lora_alpha, lora_targets, lora_save)
    check_settings(objective, steps=steps, epochs=epochs, beta=beta,
                   desirable_weight=desirable_weight, undesirable_weight=undesirable_weight,
                   sft_weight=sft_weight)
    store = Store()
    written: list[Path] = []  # what to take back if the recipe is refused
    if from_feedback:
        section = _feedback_section(store, model, objective, threshold)
    else:
        assert data is not None
        section = _file_section(store, model, objective, data, written)
    try:
        recipe = tune_recipe(model, section, objective, steps=steps, epochs=epochs, lr=lr,
                             batch_size=batch_size, beta=beta, seed=seed, name=name, store=store,
                             desirable_weight=desirable_weight,
                             undesirable_weight=undesirable_weight,
                             sft_weight=sft_weight, lora=lora)
    except BaseException:
        for path in written:  # the records file, then the records dir if this call made it
            if path.is_dir():
                path.rmdir()
            else:
                path.unlink(missing_ok=True)
        raise
    if print_recipe:
        out.print(recipe.to_yaml(), end="", highlight=False, markup=False)
        return
    view = TrainView(err)
    try:
        result = train(recipe, on_progress=view)
    finally:
        view.stop()
    show_result(result)


def lora_section(rank: int | None, alpha: float | None, targets: str | None,
                 save: str | None = None) -> dict[str, Any] | None:
    """The recipe's ``train.lora`` from the --lora-* options (None: a full tune)."""
    if rank is None:
        if alpha is not None or targets is not None or save is not None:
            raise GenloopError("--lora-alpha, --lora-targets and --lora-save need --lora-rank")
        return None
    section: dict[str, Any] = {"rank": rank}
    if alpha is not None:
        section["alpha"] = alpha
    if targets is not None:
        section["target_modules"] = [t.strip() for t in targets.split(",") if t.strip()]
    if save is not None:
        section["modules_to_save"] = [t.strip() for t in save.split(",") if t.strip()]
    return section


def _file_section(store: Any, model: str, objective: str, data: Path,
                  written: list[Path]) -> dict[str, Any]:
    """The data section of ``data``, a JSON Lines file in genloop's, TRL's or OpenAI's shape:
    read for the model (its chat template, its context) into canonical records, written
    content-hashed into the workspace's records (beside the jobs' and the feedback's). The paths
    this call created are appended to ``written``."""
    import hashlib
    import re

    from genloop.config import settings
    from genloop.data.formats import write_records
    from genloop.generation.records import tuning_records
    from genloop.models.modeldir import ModelDir
    from genloop.training.tune import data_section

    shape = data_section(objective, data)  # refuses an objective that cannot tune
    form = shape.get("form", "pairs")  # read_tuning_records' name for supervised pairs
    version = store.resolve(model)
    try:
        records = tuning_records(data, form, ModelDir(Path(version.path)))
    except InvalidInput as e:  # "line 3: ...", named with the file unless it already is
        raise InvalidInput(str(e) if str(data) in str(e) else f"{data}: {e}") from None
    directory = settings().home / "records"
    before = set(directory.iterdir()) if directory.is_dir() else None
    path = write_records(records, directory)
    if before is None:
        written[:0] = [path, directory]
    elif path not in before:
        written.insert(0, path)
    section = {**shape, "source": str(path.absolute()), "origin": {
        "file": data.name, "sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "records": len(records)}}
    stem = re.sub(r"[^\w.-]+", "-", data.stem).strip("-.")[:100]
    if stem:
        section["name"] = stem  # the dataset's name: the file's, not the records' hash
    return section


def _feedback_section(store: Any, model: str, objective: str, threshold: int) -> dict[str, Any]:
    """The data section of the model's feedback for ``objective`` (feedback/datasets.py)."""
    from genloop.feedback.datasets import feedback_data

    built = feedback_data(store, model, objective, threshold=threshold)
    counts = ", ".join(f"{k} {v}" for k, v in built.summary.items() if isinstance(v, int | float))
    err.print(f"[dim]feedback:[/] {counts} → {built.path}", highlight=False)
    return dict(built.data)
