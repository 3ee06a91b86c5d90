"""Tuning: a registered text model plus a dataset of pairs or preferences → its next version.

``tune_recipe`` writes the recipe a tune runs (``genloop tune``, the fine-tuning jobs' worker):
it fine-tunes ``base`` (``parent`` = the base version), keeps the parent's model section (so the
loop's family/config/tokenizer check passes) and registers under the base's name, as the next
``name@N``. The training settings start from the parent's and change what tuning needs to differ:

    lr               the parent's pretraining lr / 10: a tune starts from trained weights and should
                     move them a little (the usual rule of thumb for fine-tuning; DPO and KTO on
                     top of that are held near the parent by β). A parent that was itself tuned
                     keeps its lr: dividing at every generation would stall a chain of tunes;
                     a LoRA tune keeps it too (its low-rank updates start at zero).
    steps            epochs × training records / batch size (default 3 epochs, the common SFT/DPO
                     default, and OpenAI's for small files), or ``steps`` as given
    eval_every,      a tenth of the run, at most 50 steps: a fine-tuning job can be cancelled
    checkpoint_every within one evaluation interval and resumes losing at most one interval
    warmup_steps     a tenth of the run, at most 20: the weights are trained, a long warmup wastes steps
    ema_decay        off: an average over a short tune would stay near the parent's weights
    time_limit_s     off: the parent's budget was for its own training

``tune`` runs that recipe on the one loop (``training.loop.train``), or resumes a tune's run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from genloop.errors import RecipeError
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.training.loop import ProgressFn, TrainResult, train
from genloop.training.objectives import OBJECTIVES
from genloop.training.recipe import Recipe, load_recipe

# what each tuning objective trains on: the data section's kind and form
DATA_SHAPES: dict[str, dict[str, str]] = {
    "sft": {"kind": "pairs"},
    "pairs": {"kind": "pairs"},
    "dpo": {"kind": "preferences", "form": "paired"},
    "kto": {"kind": "preferences", "form": "unpaired"},
}
SHOWN = ("sft", "dpo", "kto")  # what errors and help list ("pairs" is sft's older name)
DEFAULT_EPOCHS = 3.0
LR_DIVISOR = 10  # tuning lr = the pretraining lr / 10
MAX_INTERVAL = 50  # steps between evaluations and checkpoints, at most
MAX_WARMUP = 20


def data_section(objective: str, source: str | Path, **settings: Any) -> dict[str, Any]:
    """The data section of a tune on the JSON Lines file ``source`` with ``objective``."""
    return {**_shape(objective), "source": str(source), **settings}


def _shape(objective: str) -> dict[str, str]:
    if objective not in DATA_SHAPES:
        raise RecipeError(f"objective {objective!r} cannot tune a model "
                          f"(tuning objectives: {', '.join(SHOWN)})")
    return DATA_SHAPES[objective]


def check_settings(objective: str, *, steps: int | None = None, epochs: float | None = None,
                   **given: float | None) -> None:
    """Refuse settings ``objective`` has none of (``beta`` for sft, ...) and steps with epochs:
    what ``tune_recipe`` checks before it reads any data, for callers that read data first."""
    _shape(objective)
    for key, value in given.items():
        if value is not None and key not in OBJECTIVES[objective].params:
            users = " and ".join(k for k, o in OBJECTIVES.items() if key in o.params)
            raise RecipeError(f"{key} is a setting of {users}; objective {objective!r} has none")
    if steps is not None and epochs is not None:
        raise RecipeError("give steps or epochs, not both")


def tune_recipe(
    base: str, data: dict[str, Any], objective: str, *, steps: int | None = None,
    epochs: float | None = None, lr: float | None = None, batch_size: int | None = None,
    beta: float | None = None, seed: int | None = None, name: str | None = None,
    store: Store | None = None, desirable_weight: float | None = None,
    undesirable_weight: float | None = None, sft_weight: float | None = None,
    lora: dict[str, Any] | None = None,
) -> Recipe:
    """The recipe that tunes ``base`` ("name": its newest version, or "name@N") on ``data`` (a
    recipe data section of the objective's kind) with ``objective`` (sft, dpo or kto). Settings
    left None take the tuning defaults above; ``lora`` (the recipe's ``train.lora``: rank, alpha,
    dropout, target_modules) tunes adapters instead of every weight."""
    shape = _shape(objective)
    given = {"beta": beta, "sft_weight": sft_weight, "desirable_weight": desirable_weight,
             "undesirable_weight": undesirable_weight}
    check_settings(objective, steps=steps, epochs=epochs, **given)
    for key, want in shape.items():
        got = data.get(key, "paired" if key == "form" else None)
        if got != want:
            raise RecipeError(f"objective {objective!r} tunes on {' '.join(reversed(shape.values()))}; "
                              f"data.{key} is {got!r}")
    store = store or Store()
    version = store.resolve(base)
    parent = ModelDir(Path(version.path))
    if not parent.recipe_file.is_file():
        raise RecipeError(f"{version.ref} has no frozen recipe ({parent.recipe_file}): it cannot be tuned")
    frozen = yaml.safe_load(parent.recipe_file.read_text(encoding="utf-8")) or {}
    before = dict(frozen.get("train") or {})
    t: dict[str, Any] = {
        k: before[k] for k in ("batch_size", "grad_accum", "weight_decay", "betas", "grad_clip",
                               "eval_batches", "log_every", "precision", "device", "compile",
                               "threads", "tensorboard") if k in before
    }
    parent_lr = float(before.get("lr", 1e-3))
    # LoRA's updates start at zero and are low-rank: they are commonly trained at a larger lr
    # than a full fine-tune, so a LoRA tune keeps the parent's (bench/lora.py measures it)
    keep_lr = frozen.get("parent") or lora is not None
    t.update(objective=objective, seed=before.get("seed", 0) if seed is None else seed,
             lr=lr if lr is not None else (parent_lr if keep_lr else parent_lr / LR_DIVISOR))
    if batch_size is not None:
        t["batch_size"] = batch_size
    t.update({k: v for k, v in given.items() if v is not None})
    if lora is not None:
        t["lora"] = lora
    if steps is None:
        records = _train_records(data, parent)
        per_step = int(t.get("batch_size", 12)) * int(t.get("grad_accum", 1))
        steps = max(1, math.ceil((DEFAULT_EPOCHS if epochs is None else epochs) * records / per_step))
    interval = max(1, min(MAX_INTERVAL, steps // 10))
    t.update(steps=steps, eval_every=interval, checkpoint_every=interval,
             warmup_steps=min(MAX_WARMUP, steps // 10), min_lr=None, ema_decay=None,
             time_limit_s=None, log_every=min(int(t.get("log_every", 10)), interval))
    tree = {"name": name or version.name, "parent": version.ref, "data": data,
            "model": frozen.get("model") or {}, "train": t}
    return load_recipe(tree)


def _train_records(data: dict[str, Any], parent: ModelDir) -> int:
    """How many training records ``data`` holds, once prepared with the parent's tokenizer (the
    loop prepares it again and finds it stored)."""
    section = load_recipe({"data": data}).data
    return len(section.prepare(tokenizer=parent.tokenizer()).train)


def tune(
    base: str | None, data: dict[str, Any] | None, objective: str | None, *,
    on_progress: ProgressFn | None = None, resume: str | None = None, **settings: Any,
) -> TrainResult:
    """Tune ``base`` (``tune_recipe``'s arguments) and register the result; or resume the tune's
    run ``resume`` from its last checkpoint (its frozen recipe: the other arguments are unused)."""
    if resume is not None:
        return train(None, resume=resume, on_progress=on_progress)
    if base is None or data is None or objective is None:
        raise RecipeError("a tune needs a base model, data and an objective (or resume=RUN_ID)")
    return train(tune_recipe(base, data, objective, **settings), on_progress=on_progress)
