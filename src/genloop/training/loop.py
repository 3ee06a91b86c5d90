"""The one training loop, for every family: start → fit → finish.

    start   the run (new, or resumed from its last checkpoint), its data, the model (initialised
            from the recipe's seed, or from the parent it fine-tunes), the objective (and a
            frozen reference copy of the parent if the objective asks for one), the optimizer
    fit     for each step: a batch (a pure function of seed, step and rank) → objective →
            backward → clip → AdamW step → log → evaluate / checkpoint every N steps
    finish  final evaluation → register the model version with its card and lineage

A family brings only its contract (``Family.loss``, or ``Family.train_step`` when several players
take turns, as in a GAN); the recipe picks the objective (``training/objectives.py``; by default
its data kind's own); the data kind brings its batches (``training/kinds.py``). Features are composed in
here, not threaded through the families: bf16 autocast, torch.compile, DDP (``runtime.py``),
gradient accumulation, an EMA of the weights, time limits. Nothing here prints: progress goes to
a callback.

Bit-identical resume on CPU: the data order depends only on (seed, step, rank); the checkpoint
holds weights, optimizer moments and the global RNG (dropout), so a resumed run replays exactly
the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from genloop.atomic import atomic_write_text
from genloop.config import settings
from genloop.errors import NotFound, RecipeError, TrainingDiverged
from genloop.evaluation.kinds import EvalContext, evaluation_for
from genloop.hub.adapters import base_dirs
from genloop.models import lora
from genloop.models.family import Family, ModelConfig
from genloop.models.modeldir import ModelDir
from genloop.models.registry import get_family
from genloop.store import Store
from genloop.training import encoders
from genloop.training.batches import batch_at, warm_up
from genloop.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from genloop.training.ema import EMA
from genloop.training.features import feature_extractor
from genloop.training.kinds import batches_for, default_objective
from genloop.training.metrics import MetricsLog
from genloop.training.objectives import Objective, get_objective
from genloop.training.optimizers import build_optimizer, param_groups  # noqa: F401 (benches read it here)
from genloop.training.recipe import Recipe, TrainConfig, load_recipe
from genloop.training.recognisers import recogniser_for
from genloop.training.register import register_model
from genloop.training.runtime import Distributed, autocast, pick_device, seeded_rng, use_compile, uses_bf16

__all__ = ["Progress", "StopTraining", "TrainResult", "batch_at", "lr_at", "train"]


@dataclass
class Progress:
    """What a face shows while training runs."""

    phase: str  # "data" | "build" | "train" | "eval" | "checkpoint" | "register" | "done"
    step: int = 0
    steps: int = 0
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None  # throughput in ``unit``s per second
    eta_s: float | None = None
    val_loss: float | None = None
    message: str = ""
    unit: str = "tokens"
    # the objective's other figures: the step's (train) or the validation batches' (eval), e.g.
    # reward_accuracy, reward_margin, kl for the preference objectives
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    model_ref: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)  # text samples, or the image grid's path


ProgressFn = Callable[[Progress], None]
WARMUP_STEPS_UNTIMED = 20


class StopTraining(Exception):  # noqa: N818 - a request, not an error
    """Raised by an ``on_progress`` callback to stop the run cleanly (a cancelled tuning job):
    the last checkpoint is kept, the run is marked stopped, nothing is registered; ``train``
    raises it on to its caller."""


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to the floor at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - 1 - cfg.warmup_steps)  # the last step (steps - 1) is at the floor
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.floor_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.floor_lr)


@dataclass
class Run:
    """One training execution, as ``start`` hands it to ``fit`` and ``fit`` to ``finish``."""

    id: str
    dir: Path
    recipe: Recipe
    store: Store
    ddp: Distributed
    report: ProgressFn
    dataset: Any  # the data kind's dataset (data/kinds.py)
    batches: Any  # the data kind's batches (training/kinds.py)
    family: Family
    model_config: ModelConfig
    model: torch.nn.Module
    device: torch.device
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    state: TrainState
    objective: Objective
    reference: torch.nn.Module | None  # frozen copy of the parent, for objectives that need one
    resumed: bool
    parent_ref: str | None  # recorded as the registered version's parent
    metrics: MetricsLog | None = None
    adapter: dict[str, Any] | None = None  # a LoRA run: what its adapter.json says
    text_encoder: dict[str, Any] | None = None  # its pretrained text encoder: ref, sha256, freeze
    stopped_early: bool = False

    @property
    def kind(self) -> str:
        return str(self.recipe.data.kind)

    @property
    def cfg(self) -> TrainConfig:
        return self.recipe.train

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / "checkpoints"

    @property
    def judged(self) -> torch.nn.Module:
        """The weights that are evaluated and will be registered: the EMA's if kept."""
        return self.ema.model if self.ema else self.model


def train(
    recipe: Recipe | str | Path | dict | None,
    *,
    overrides: Sequence[str] = (),
    resume: str | None = None,
    on_progress: ProgressFn | None = None,
    register: bool = True,
    run_id: str | None = None,
) -> TrainResult:
    """Train a recipe (or resume run ``resume``) to the end; register the model version.
    ``run_id`` names a new run (a tuning job's worker records it first, to resume it later)."""
    with seeded_rng(None):  # what the run does to torch's global RNG stays inside it
        run = start(recipe, overrides=overrides, resume=resume, report=on_progress or (lambda p: None),
                    run_id=run_id)
        fit(run)
        return finish(run, register=register)


def start(
    recipe: Recipe | str | Path | dict | None, *, overrides: Sequence[str] = (), resume: str | None = None,
    report: ProgressFn, run_id: str | None = None,
) -> Run:
    """Everything before the first step: run, data, model, objective, optimizer, run row."""
    # 1. the run (a resumed one brings its frozen recipe), its family and objective
    store = Store()
    ddp = Distributed()
    if resume is not None:
        row = store.get_run(resume)
        run_dir = Path(row.path)
        recipe = load_recipe(row.recipe)
        run_id = row.id
    else:
        recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, list(overrides))
        run_id = run_id or uuid.uuid4().hex[:12]
        run_dir = settings().runs_dir / run_id
    cfg = recipe.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    family, kind = get_family(recipe.model.family), recipe.data.kind
    if kind not in family.kinds:
        raise RecipeError(f"model.family {family.name!r} trains on {' or '.join(family.kinds)} data; "
                          f"data.source {recipe.data.source!r} is {kind} data")
    if family.train_step is not None and (cfg.grad_accum > 1 or ddp.world > 1):
        raise RecipeError(f"{family.name} takes its own optimizer steps: use train.grad_accum=1 "
                          "and a single process (no torchrun)")
    objective_name = cfg.objective or family.objective or default_objective(kind)
    objective = get_objective(objective_name, family, kind, getattr(recipe.data, "form", None), cfg)
    if objective.needs_reference and not recipe.parent:
        raise RecipeError(f"train.objective {objective_name!r} compares the model with a frozen copy "
                          "of the model it starts from: set parent (name@N)")

    parent_dir = ModelDir(Path(store.resolve(recipe.parent).path)) if recipe.parent else None
    targets = _lora_targets(recipe, family, parent_dir)  # before any data is read
    encoder = encoders.resolve_encoder(store, family, recipe.model.preset, recipe.model.config)

    # 2. data: a fine-tune's text is tokenized by its parent's tokenizer, a pretrained text
    # encoder's captions by the encoder's
    report(Progress("data", message=f"preparing {recipe.data.source}"))
    tokenizer = parent_dir.tokenizer() if parent_dir else encoder.tokenizer if encoder else None
    dataset = recipe.data.prepare(progress=lambda m: report(Progress("data", message=m)),
                                  tokenizer=tokenizer)
    if ddp.main:
        store.add_dataset(dataset.name, dataset.hash, kind, str(dataset.path), dataset.meta)
    batches = warm_up(batches_for(kind, dataset), cfg)
    model_config = encoders.configure(family, recipe.model_config_for(batches.fill()), encoder)
    batches.check(model_config)

    # 3. the model: initialised from the seed, then from its pretrained text encoder and from
    # the parent it fine-tunes
    report(Progress("build", message=f"{family.name} {recipe.model.preset}"))
    with seeded_rng(cfg.seed):  # initialisation is seeded without touching the caller's RNG
        model = family.build(model_config)
    if resume is None:
        encoders.load_encoder(model, encoder, store)
    parent_ref, reference = None, None
    if recipe.parent and (resume is None or objective.needs_reference):
        ref, parent_family, parent_config, parent_model = _load_parent(
            store, recipe.parent, family, model_config, dataset)
        if resume is None:
            if parent_family.name == family.name:
                model.load_state_dict(parent_model.state_dict())
            else:  # a family that starts from another's network (reward: from a gpt)
                assert family.init_from is not None  # ``_load_parent`` refuses it otherwise
                family.init_from(model, parent_family, parent_config, parent_model)
            parent_ref = ref
        if objective.needs_reference:
            reference = parent_model.requires_grad_(False).eval()
    adapter = None
    if cfg.lora is not None:  # adapters on the parent's frozen weights: only they train
        assert parent_dir is not None and targets is not None  # ``_lora_targets`` checked it
        with seeded_rng(cfg.seed + 7):
            lora.inject(model, cfg.lora, targets, family)
        resolved = {"target_modules": targets, "alpha": cfg.lora.scale_alpha}
        adapter = {"lora": cfg.lora.model_copy(update=resolved).model_dump(exclude_none=True),
                   "base": store.resolve(str(recipe.parent)).ref,
                   "base_sha256": parent_dir.weights_sha256()}
    encoders.freeze_if_asked(model, model_config)  # frozen weights stay out of the optimizer
    device = pick_device(cfg)
    model.to(device)
    if reference is not None:
        reference.to(device)

    # 4. the optimizer, and the run's state: from its checkpoint, or a new run row
    optimizer = build_optimizer(model, cfg)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    state = TrainState()
    if resume is not None:
        last = run_dir / "checkpoints" / "last"
        if not last.is_dir():
            raise NotFound(f"run {run_id} has no checkpoint to resume from ({last})")
        # restores torch's global RNG too (dropout), inside ``train``'s own
        state = load_checkpoint(last, model=model, optimizer=optimizer,
                                ema=None if ema is None else ema.model)
        store.update_run(run_id, status="running", error=None)
    elif ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
        store.create_run(
            recipe=recipe.frozen(), recipe_hash=recipe.hash(), dataset_hash=dataset.hash,
            family=family.name, model_name=recipe.name, path=str(run_dir), run_id=run_id,
        )
    return Run(run_id, run_dir, recipe, store, ddp, report, dataset, batches, family, model_config,
               model, device, optimizer, ema, state, objective, reference, resumed=resume is not None,
               parent_ref=parent_ref, adapter=adapter,
               text_encoder=encoder.lineage() if encoder else None)


def _lora_targets(recipe: Recipe, family: Family, parent_dir: ModelDir | None) -> list[str] | None:
    """A LoRA run's target modules, checked on the parent's network (built on the meta device:
    no memory, no weights) before any data is read; None for a run without ``train.lora``."""
    section = recipe.train.lora
    if section is None:
        return None
    if parent_dir is None:
        raise RecipeError("train.lora tunes a registered version with adapters: set parent (name@N)")
    parent_family, parent_config = parent_dir.family_config()
    if parent_family.name != family.name:
        raise RecipeError(f"train.lora: parent {recipe.parent} is a {parent_family.name}; LoRA "
                          f"adapters tune a version of their own family ({family.name})")
    targets = lora.targets_for(section, family, parent_config)
    with torch.device("meta"):
        network = family.build(parent_config)
        lora.check_targets(network, targets, family)
        lora.check_saved(network, section.modules_to_save or [], family)
    return targets


def _load_parent(
    store: Store, name: str, family: Family, model_config: ModelConfig, dataset: Any
) -> tuple[str, Family, ModelConfig, torch.nn.Module]:
    """The parent version's reference, family, config and network, if this recipe can fine-tune
    it: one of its own family with the same config, or any a family with ``init_from`` checks."""
    parent = store.resolve(name)
    parent_dir = ModelDir(Path(parent.path))
    # an adapter version loads over its base, folded in: the parent as one plain network
    parent_family, parent_config, parent_model = parent_dir.load(base=base_dirs(store), merged=True)
    same = parent_family.name == family.name
    if (same and parent_config != model_config) or (not same and family.init_from is None):
        raise RecipeError(
            f"parent {parent.ref} is a {parent_family.name} with config "
            f"{parent_config.model_dump()}; this recipe builds {family.name} "
            f"{model_config.model_dump()}: fine-tuning needs the same family, sizes and "
            "tokenizer (use the parent's model section and data tokenizer)"
        )
    parent_tokenizer = parent_dir.tokenizer()
    data_tokenizer = getattr(dataset, "tokenizer", None)  # kinds that hold text have one
    if parent_tokenizer and data_tokenizer and parent_tokenizer.to_json() != data_tokenizer.to_json():
        raise RecipeError(
            f"parent {parent.ref} was trained with a different tokenizer than this dataset's: "
            "fine-tune on data prepared with the parent's tokenizer"
        )
    return parent.ref, parent_family, parent_config, parent_model


def fit(run: Run) -> None:
    """The step loop, from ``run.state.step`` to ``train.steps`` (or the time limit)."""
    cfg, ddp, family, model, state = run.cfg, run.ddp, run.family, run.model, run.state
    net: torch.nn.Module = model
    if ddp.world > 1:
        device = run.device
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def objective(batch: Any) -> dict[str, torch.Tensor]:
        return run.objective.loss(family, net, batch, run.reference)

    if use_compile(cfg, family):
        # compile the whole objective, so the loss fuses with the network's last layers
        objective = torch.compile(objective)

    per_rank = max(1, cfg.batch_size // ddp.world)
    units_per_step = run.batches.units(run.model_config, per_rank) * ddp.world * cfg.grad_accum
    unit = run.batches.unit
    if ddp.main:
        run.metrics = MetricsLog(run.dir, cfg.tensorboard, state.step if run.resumed else None)
    # dropout draws from the global RNG: seed it from the recipe (a resume has restored it from
    # the checkpoint), so the same recipe trains to the same weights in any process
    dropout_seed = None if run.resumed else (cfg.seed + 1) * 1_000_003 + ddp.rank
    with seeded_rng(dropout_seed, run.device):
        model.train()
        t_start = time.perf_counter() - state.elapsed_s
        t_window, tokens_window = time.perf_counter(), 0
        tok_s: float | None = None
        try:
            while state.step < cfg.steps:
                # 1. one optimizer step
                t_step = time.perf_counter()
                lr = lr_at(state.step, cfg)
                for group in run.optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)  # Muon's groups: muon_lr / lr
                loss_sum, stats = _step(run, objective, per_rank)
                if run.ema:
                    run.ema.update(model)
                # 2. counters and throughput
                state.step += 1
                state.tokens_seen += units_per_step
                tokens_window += units_per_step
                now = time.perf_counter()
                state.elapsed_s = now - t_start
                if state.step > WARMUP_STEPS_UNTIMED:  # compilation and warm-up are not throughput
                    state.step_time_s += now - t_step
                    state.timed_tokens += units_per_step
                # 3. log, evaluate, checkpoint, stop
                if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                    tok_s = tokens_window / max(now - t_window, 1e-9)
                    t_window, tokens_window = now, 0
                    eta = (cfg.steps - state.step) * units_per_step / tok_s if tok_s else None
                    if run.metrics:
                        extra = {f"train/{k}": v for k, v in stats.items() if k != "loss"}
                        run.metrics.log(state.step, {"train/loss": loss_sum, **extra, "lr": lr,
                                                     f"{unit}_per_s": tok_s, "elapsed_s": state.elapsed_s})
                    run.report(Progress("train", state.step, cfg.steps, loss_sum, lr, tok_s, eta, unit=unit,
                                        metrics=stats))
                if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                    val_loss, val_stats = _estimate_val(run)
                    if run.metrics:
                        run.metrics.log(state.step, {"val/loss": val_loss,
                                                     **{f"val/{k}": v for k, v in val_stats.items()},
                                                     "elapsed_s": state.elapsed_s})
                    if family.selects_best and val_loss < state.best_val_loss:
                        state.best_val_loss, state.best_step = val_loss, state.step
                        _checkpoint(run, "best")
                    run.report(Progress("eval", state.step, cfg.steps, loss_sum, lr, tok_s,
                                        val_loss=val_loss, unit=unit, metrics=val_stats))
                if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                    _checkpoint(run, "last")
                    run.report(Progress("checkpoint", state.step, cfg.steps, loss_sum,
                                        message=str(run.ckpt_dir / "last"), unit=unit))
                if cfg.time_limit_s and state.elapsed_s >= cfg.time_limit_s:
                    run.stopped_early = True
                    _checkpoint(run, "last")
                    break
        except _Diverged as d:
            where = _save_last_good(run)
            if ddp.main:
                run.store.update_run(run.id, status="diverged", step=d.step,
                                     error=f"non-finite loss at step {d.step}")
            if run.metrics:
                run.metrics.close()
            raise TrainingDiverged(
                f"loss or gradients became non-finite (loss {d.loss}) at step {d.step}; "
                f"last good checkpoint: {where} "
                f"(lower train.lr, raise train.warmup_steps or set train.grad_clip)"
            ) from None
        except StopTraining:
            if ddp.main:
                run.store.update_run(run.id, status="stopped", step=state.step)
            if run.metrics:
                run.metrics.close()
            raise
        except BaseException as e:
            if ddp.main:
                run.store.update_run(run.id, status="failed", step=state.step, error=str(e)[:500])
            if run.metrics:
                run.metrics.close()
            raise


def _step(run: Run, objective: Callable[[Any], dict[str, torch.Tensor]],
          per_rank: int) -> tuple[float, dict[str, float]]:
    """One optimizer step at ``run.state.step``: (the step's loss, the family's extra stats)."""
    cfg, family, step, rank = run.cfg, run.family, run.state.step, run.ddp.rank
    config, device, optimizer = run.model_config, run.device, run.optimizer
    if family.train_step is not None:
        # the family takes its own turns (GAN: discriminator, then generator)
        batch = run.batches.train_batch(config, step, 0, seed=cfg.seed, rank=rank, batch=per_rank,
                                        device=device)
        with autocast(cfg, device.type):
            stats = family.train_step(run.model, batch, optimizer, cfg.grad_clip)
        if not all(math.isfinite(v) for v in stats.values()):
            optimizer.zero_grad(set_to_none=True)
            raise _Diverged(step, stats["loss"])
        return stats["loss"], stats
    loss_sum = 0.0
    figures: dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        batch = run.batches.train_batch(config, step, micro, seed=cfg.seed, rank=rank, batch=per_rank,
                                        device=device)
        with autocast(cfg, device.type):
            out = objective(batch)
            loss = out["loss"] / cfg.grad_accum
        loss.backward()
        loss_sum += float(loss.detach())
        for k, v in out.items():  # the objective's metrics, averaged over the micro-batches
            if k != "loss":
                value = float(v.detach()) if isinstance(v, torch.Tensor) else float(v)
                figures[k] = figures.get(k, 0.0) + value / cfg.grad_accum
    # the gradient norm is checked too: a finite loss with non-finite gradients would otherwise
    # turn the weights into NaN, and the next checkpoint would keep them
    # (max_norm=inf when clipping is off scales by exactly 1.0: the update is unchanged)
    grad_norm = torch.nn.utils.clip_grad_norm_(
        run.model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf, foreach=True
    )
    if run.ddp.flag_any(not math.isfinite(loss_sum) or not math.isfinite(float(grad_norm))):
        optimizer.zero_grad(set_to_none=True)
        raise _Diverged(step, loss_sum)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, figures


def _estimate_val(run: Run) -> tuple[float, dict[str, float]]:
    """The objective on the fixed validation batches, averaged over ranks: the loss, and the
    objective's other figures (averaged over the batches, on this rank)."""
    cfg, judged = run.cfg, run.judged
    judged.eval()
    losses: list[float] = []
    figures: dict[str, float] = {}
    with torch.no_grad(), autocast(cfg, run.device.type):
        for batch in run.batches.val_batches(run.model_config, cfg.eval_batches, cfg.batch_size,
                                             seed=cfg.seed, device=run.device):
            out = run.objective.loss(run.family, judged, batch, run.reference)
            losses.append(out["loss"].item())
            for k, v in out.items():
                if k != "loss":
                    figures[k] = figures.get(k, 0.0) + float(v)
    run.model.train()
    return (run.ddp.mean(sum(losses) / len(losses)),
            {k: v / len(losses) for k, v in figures.items()})


def _checkpoint(run: Run, name: str) -> None:
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        raise _Diverged(run.state.step, math.nan)  # never save (or point `last` at) NaN weights
    if run.ddp.main:
        save_checkpoint(run.ckpt_dir, name, family=run.family, config=run.model_config, model=run.model,
                        optimizer=run.optimizer, state=run.state,
                        ema=None if run.ema is None else run.ema.model)


class _Diverged(Exception):
    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss


def _save_last_good(run: Run) -> Path:
    """Keep a loadable checkpoint: the current weights if still finite, else the last saved."""
    if all(torch.isfinite(p).all() for p in run.model.parameters()):
        _checkpoint(run, "last")
    return run.ckpt_dir / "last"


def finish(run: Run, *, register: bool = True) -> TrainResult:
    """Final evaluation of the registered weights, the run's status, registration (rank 0)."""
    cfg, family, model, state, report = run.cfg, run.family, run.model, run.state, run.report
    recipe, dataset, unit = run.recipe, run.dataset, run.batches.unit
    result = TrainResult(run_id=run.id, run_dir=run.dir, model_ref=None)
    if run.ddp.main:
        # 1. the weights to register: the EMA's, the best checkpoint's, on the CPU
        if run.ema:  # the averaged weights are the model from here on
            model.load_state_dict(run.ema.model.state_dict())
        model.to("cpu")  # evaluation, sampling and saving happen on the CPU
        if (run.ckpt_dir / "best").is_dir():
            ModelDir(run.ckpt_dir / "best").load_weights_into(model, ema=run.ema is not None)
        model.eval()
        # 2. final evaluation: the data kind's own (evaluation/kinds.py)
        report(Progress("eval", state.step, cfg.steps, message="final evaluation"))
        context = EvalContext(run.dir, bf16=uses_bf16(cfg, "cpu"), extractor=lambda: feature_extractor(
            recipe, dataset, run.store, _extractor_trainer(report)), recogniser=lambda: recogniser_for(
            recipe, dataset, run.store, _extractor_trainer(report)))
        result.metrics, result.samples = evaluation_for(run.kind).evaluate(
            family, model, run.model_config, dataset, recipe.eval, seed=cfg.seed, context=context)
        result.metrics["parameters"] = sum(p.numel() for p in model.parameters())
        if run.adapter is not None:
            result.metrics["trainable_parameters"] = lora.trainable_parameters(model)
        result.metrics.update({
            "train_steps": state.step, f"train_{unit}": state.tokens_seen,
            "train_time_s": state.elapsed_s, "best_step": state.best_step,
            f"train_{unit}_per_s": state.timed_tokens / max(state.step_time_s, 1e-9),
        })
        if run.metrics:
            run.metrics.log(state.step, {f"final/{k}": v for k, v in result.metrics.items()})
            run.metrics.close()
        # 3. the run's status, and the model version
        status = "stopped" if run.stopped_early else "completed"
        run.store.update_run(run.id, status=status, step=state.step, metrics=result.metrics)
        if register:
            report(Progress("register", state.step, cfg.steps, message=recipe.name))
            result.model_ref = register_model(
                run.store, recipe, family, run.model_config, model, dataset, run.id,
                result.metrics, [] if context.grid else result.samples, run.parent_ref,
                grid=context.grid, adapter=run.adapter, text_encoder=run.text_encoder,
            )
        report(Progress("done", state.step, cfg.steps, message=result.model_ref or run.id))
    run.ddp.barrier()
    return result


def _extractor_trainer(report: ProgressFn) -> Callable[[dict[str, Any]], str]:
    """How ``features.feature_extractor`` trains a missing extractor: with this same loop."""

    def train_extractor(extractor_recipe: dict[str, Any]) -> str:
        report(Progress("eval", message=f"training {extractor_recipe['name']} "
                                        "(once per dataset)"))
        ref = train(extractor_recipe, on_progress=report).model_ref
        assert ref is not None  # train registers by default
        return ref

    return train_extractor
