"""The one training loop, for every family.

    prepare data → build model → (resume) → for each step:
        sample a batch (a pure function of seed, step and rank) → loss → backward
        → clip → AdamW step → log → evaluate / checkpoint every N steps
    → final evaluation → register the model version with its card and lineage

A family brings only its objective (``Family.loss``, or ``Family.train_step`` when several
players take turns, as in a GAN); the data brings its batches (``training/batches.py``: token
windows or images). Features are composed in here, not threaded through the families: bf16
autocast, torch.compile, gradient accumulation, an EMA of the weights, DDP (when launched by
``torchrun``), time limits. Nothing here prints: progress goes to a callback.

Bit-identical resume on CPU: the data order depends only on (seed, step, rank); the checkpoint
holds weights, optimizer moments and the global RNG (dropout), so a resumed run replays exactly
the steps an uninterrupted one would have taken.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from genloop.atomic import atomic_write_json, atomic_write_text
from genloop.config import settings
from genloop.data.images import ImageDataset
from genloop.data.text import TextDataset
from genloop.errors import NotFound, RecipeError, TrainingDiverged
from genloop.evaluation.image import evaluate_images
from genloop.evaluation.text import evaluate_text
from genloop.generation.image import save_grid
from genloop.models.family import Family, fast_bf16
from genloop.models.io import config_json, load_model_dir, load_weights, save_weights
from genloop.models.registry import get_family
from genloop.store import Store
from genloop.tokenizers import load_tokenizer, save_tokenizer
from genloop.training.batches import batch_at, batches_for
from genloop.training.card import model_card
from genloop.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from genloop.training.ema import EMA
from genloop.training.recipe import Recipe, TrainConfig, load_recipe

__all__ = ["Progress", "TrainResult", "batch_at", "lr_at", "train"]


@dataclass
class Progress:
    """What a face shows while training runs."""

    phase: str  # "data" | "build" | "train" | "eval" | "register" | "done"
    step: int = 0
    steps: int = 0
    loss: float | None = None
    lr: float | None = None
    tokens_per_s: float | None = None  # throughput in ``unit``s per second
    eta_s: float | None = None
    val_loss: float | None = None
    message: str = ""
    unit: str = "tokens"


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    model_ref: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)  # text samples, or the image grid's path


ProgressFn = Callable[[Progress], None]
WARMUP_STEPS_UNTIMED = 20


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to ``lr``, then cosine decay to the floor at the last step."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - 1 - cfg.warmup_steps)  # the last step (steps - 1) is at the floor
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.floor_lr + 0.5 * (1 + math.cos(math.pi * progress)) * (cfg.lr - cfg.floor_lr)


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices (linear and embedding weights), never norms or biases."""
    decay, no_decay, seen = [], [], set()
    for p in model.parameters():
        if id(p) in seen or not p.requires_grad:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


class _Distributed:
    """Rank and world size; set up when launched by torchrun (gloo on CPU, NCCL on GPU)."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def flag_any(self, flag: bool) -> bool:
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(t)
        return bool(t.item() > 0)


class _Metrics:
    """metrics.jsonl (always) and TensorBoard (if enabled), written by rank 0 only."""

    def __init__(self, run_dir: Path, tensorboard: bool, resume_step: int | None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            # drop lines logged after the checkpoint we resume from: they will be logged again
            kept = [ln for ln in self.path.read_text().splitlines()
                    if ln and json.loads(ln).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(k + "\n" for k in kept))
        self.file = self.path.open("a", encoding="utf-8")
        self.tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:  # tensorboard is optional at run time
                self.tb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        self.file.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(
    recipe: Recipe | str | Path | dict,
    *,
    overrides: list[str] = (),
    resume: str | None = None,
    on_progress: ProgressFn | None = None,
    register: bool = True,
) -> TrainResult:
    """Train a recipe (or resume run ``resume``) to the end; register the model version."""
    report = on_progress or (lambda p: None)
    store = Store()
    ddp = _Distributed()
    if resume is not None:
        run = store.get_run(resume)
        run_dir = Path(run.path)
        recipe = load_recipe(run.recipe)
        run_id = run.id
    else:
        recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe, list(overrides))
        run_id = uuid.uuid4().hex[:12]
        run_dir = settings().runs_dir / run_id
    cfg = recipe.train
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    # 1. data
    report(Progress("data", message=f"preparing {recipe.data.source}"))
    dataset = recipe.data.prepare(progress=lambda m: report(Progress("data", message=m)))
    if ddp.main:
        store.add_dataset(dataset.name, dataset.hash, recipe.data.kind, str(dataset.path), dataset.meta)
    batches = batches_for(dataset)

    # 2. model
    family = get_family(recipe.model.family)
    if (family.modality == "text") != isinstance(dataset, TextDataset):
        raise RecipeError(
            f"model.family {family.name!r} is a{'n image' if family.modality == 'image' else ' text'} "
            f"family but data.source {recipe.data.source!r} is {recipe.data.kind} data"
        )
    if family.train_step is not None and (cfg.grad_accum > 1 or ddp.world > 1):
        raise RecipeError(f"{family.name} takes its own optimizer steps: use train.grad_accum=1 "
                          "and a single process (no torchrun)")
    model_config = recipe.model_config_for(batches.fill())
    batches.check(model_config)
    report(Progress("build", message=f"{family.name} {recipe.model.preset}"))
    with torch.random.fork_rng():  # initialisation is seeded without touching the caller's RNG
        torch.manual_seed(cfg.seed)
        model = family.build(model_config)
    parent_ref = None
    if recipe.parent and resume is None:
        parent = store.resolve(recipe.parent)
        parent_family, parent_config, parent_model = load_model_dir(Path(parent.path))
        if parent_family.name != family.name or parent_config != model_config:
            raise RecipeError(
                f"parent {parent.ref} is a {parent_family.name} with config "
                f"{parent_config.model_dump()}; this recipe builds {family.name} "
                f"{model_config.model_dump()}: fine-tuning needs the same family, sizes and "
                "tokenizer (use the parent's model section and data tokenizer)"
            )
        parent_tokenizer = (load_tokenizer(Path(parent.path) / "tokenizer.json")
                            if isinstance(dataset, TextDataset) else None)
        if parent_tokenizer and parent_tokenizer.to_json() != dataset.tokenizer.to_json():
            raise RecipeError(
                f"parent {parent.ref} was trained with a different tokenizer than this dataset's: "
                "fine-tune on data prepared with the parent's tokenizer"
            )
        model.load_state_dict(parent_model.state_dict())
        parent_ref = parent.ref
    device = pick_device(cfg)
    model.to(device)
    # fused AdamW: one kernel for all parameters instead of a dozen ops per tensor
    optimizer = torch.optim.AdamW(
        param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, fused=True
    )
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    state = TrainState()
    if resume is not None:
        last = run_dir / "checkpoints" / "last"
        if not last.is_dir():
            raise NotFound(f"run {run_id} has no checkpoint to resume from ({last})")
        state = load_checkpoint(last, model=model, optimizer=optimizer, ema=ema and ema.model)
        store.update_run(run_id, status="running", error=None)
    elif ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "recipe.yaml", recipe.to_yaml())
        store.create_run(
            recipe=recipe.frozen(), recipe_hash=recipe.hash(), dataset_hash=dataset.hash,
            family=family.name, model_name=recipe.name, path=str(run_dir), run_id=run_id,
        )
    net: torch.nn.Module = model
    if ddp.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def objective(batch: Any) -> dict[str, torch.Tensor]:
        return family.loss(net, batch)

    if use_compile(cfg, family):
        # compile the whole objective, so the loss fuses with the network's last layers
        objective = torch.compile(objective)

    per_rank = max(1, cfg.batch_size // ddp.world)
    units_per_step = batches.units(model_config, per_rank) * ddp.world * cfg.grad_accum
    unit = batches.unit
    metrics = _Metrics(run_dir, cfg.tensorboard, state.step if resume else None) if ddp.main else None
    ckpt_dir = run_dir / "checkpoints"

    def checkpoint(name: str) -> None:
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise _Diverged(state.step, math.nan)  # never save (or point `last` at) NaN weights
        if ddp.main:
            save_checkpoint(ckpt_dir, name, family=family, config=model_config, model=model,
                            optimizer=optimizer, state=state, ema=ema and ema.model)

    def estimate_val() -> float:
        judged = ema.model if ema else model  # the weights that will be registered
        judged.eval()
        losses = []
        with torch.no_grad(), autocast(cfg, device.type):
            for batch in batches.val_batches(model_config, cfg.eval_batches, cfg.batch_size,
                                             seed=cfg.seed, device=device):
                losses.append(family.loss(judged, batch)["loss"].item())
        model.train()
        return ddp.mean(sum(losses) / len(losses))

    # 3. the loop
    if resume is None:
        # dropout draws from the global RNG: seed it from the recipe (a resume restores it from
        # the checkpoint), so the same recipe trains to the same weights in any process
        torch.manual_seed((cfg.seed + 1) * 1_000_003 + ddp.rank)
    model.train()
    t_start = time.perf_counter() - state.elapsed_s
    t_window, tokens_window = time.perf_counter(), 0
    tok_s: float | None = None
    stopped_early = False
    try:
        while state.step < cfg.steps:
            t_step = time.perf_counter()
            step = state.step
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if family.train_step is not None:
                # the family takes its own turns (GAN: discriminator, then generator)
                batch = batches.train_batch(model_config, step, 0, seed=cfg.seed, rank=ddp.rank,
                                            batch=per_rank, device=device)
                with autocast(cfg, device.type):
                    stats = family.train_step(model, batch, optimizer, cfg.grad_clip)
                loss_sum = stats["loss"]
                if not all(math.isfinite(v) for v in stats.values()):
                    optimizer.zero_grad(set_to_none=True)
                    raise _Diverged(step, loss_sum)
            else:
                loss_sum, stats = 0.0, {}
                for micro in range(cfg.grad_accum):
                    batch = batches.train_batch(model_config, step, micro, seed=cfg.seed,
                                                rank=ddp.rank, batch=per_rank, device=device)
                    with autocast(cfg, device.type):
                        loss = objective(batch)["loss"] / cfg.grad_accum
                    loss.backward()
                    loss_sum += float(loss.detach())
                # the gradient norm is checked too: a finite loss with non-finite gradients would
                # otherwise turn the weights into NaN, and the next checkpoint would keep them
                # (max_norm=inf when clipping is off scales by exactly 1.0: the update is unchanged)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf, foreach=True
                )
                if ddp.flag_any(not math.isfinite(loss_sum) or not math.isfinite(float(grad_norm))):
                    optimizer.zero_grad(set_to_none=True)
                    raise _Diverged(step, loss_sum)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            if ema:
                ema.update(model)
            state.step += 1
            state.tokens_seen += units_per_step
            tokens_window += units_per_step
            now = time.perf_counter()
            state.elapsed_s = now - t_start
            if state.step > WARMUP_STEPS_UNTIMED:  # compilation and warm-up are not throughput
                state.step_time_s += now - t_step
                state.timed_tokens += units_per_step

            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                tok_s = tokens_window / max(now - t_window, 1e-9)
                t_window, tokens_window = now, 0
                eta = (cfg.steps - state.step) * units_per_step / tok_s if tok_s else None
                if metrics:
                    extra = {f"train/{k}": v for k, v in stats.items() if k != "loss"}
                    metrics.log(state.step, {"train/loss": loss_sum, **extra, "lr": lr,
                                             f"{unit}_per_s": tok_s, "elapsed_s": state.elapsed_s})
                report(Progress("train", state.step, cfg.steps, loss_sum, lr, tok_s, eta, unit=unit))
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                val_loss = estimate_val()
                if metrics:
                    metrics.log(state.step, {"val/loss": val_loss, "elapsed_s": state.elapsed_s})
                if family.selects_best and val_loss < state.best_val_loss:
                    state.best_val_loss, state.best_step = val_loss, state.step
                    checkpoint("best")
                report(Progress("eval", state.step, cfg.steps, loss_sum, lr, tok_s,
                                val_loss=val_loss, unit=unit))
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                checkpoint("last")
            if cfg.time_limit_s and state.elapsed_s >= cfg.time_limit_s:
                stopped_early = True
                checkpoint("last")
                break
    except _Diverged as d:
        where = _save_last_good(model, checkpoint, ckpt_dir)
        if ddp.main:
            store.update_run(run_id, status="diverged", step=d.step,
                             error=f"non-finite loss at step {d.step}")
        if metrics:
            metrics.close()
        raise TrainingDiverged(
            f"loss or gradients became non-finite (loss {d.loss}) at step {d.step}; "
            f"last good checkpoint: {where} "
            f"(lower train.lr, raise train.warmup_steps or set train.grad_clip)"
        ) from None
    except BaseException as e:
        if ddp.main:
            store.update_run(run_id, status="failed", step=state.step, error=str(e)[:500])
        if metrics:
            metrics.close()
        raise

    # 4. final evaluation and registration (rank 0)
    result = TrainResult(run_id=run_id, run_dir=run_dir, model_ref=None)
    if ddp.main:
        if ema:  # the averaged weights are the model from here on
            model.load_state_dict(ema.model.state_dict())
        model.to("cpu")  # evaluation, sampling and saving happen on the CPU
        if (ckpt_dir / "best").is_dir():
            best = ckpt_dir / "best"
            load_weights(model, best / ("ema.safetensors" if ema else "weights.safetensors"))
        model.eval()
        report(Progress("eval", state.step, cfg.steps, message="final evaluation"))
        if isinstance(dataset, TextDataset):
            val_ids = np.asarray(dataset.val)
            if not recipe.eval.full_validation:
                val_ids = val_ids[: 64 * model_config.block_size]
            result.metrics, result.samples = evaluate_text(
                family, model, dataset.tokenizer, val_ids, recipe.eval, seed=cfg.seed
            )
        else:
            extractor = None
            if family.generative and recipe.eval.num_samples:
                from genloop.training.features import feature_extractor  # trains one on first use

                extractor = feature_extractor(recipe, dataset, store, report)
            bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and fast_bf16("cpu"))
            result.metrics, grid = evaluate_images(family, model, model_config, dataset, recipe.eval,
                                                   seed=cfg.seed, extractor=extractor, bf16=bf16)
            if grid is not None:
                save_grid(grid, run_dir / "samples.png")
                result.samples = [str(run_dir / "samples.png")]
        result.metrics["parameters"] = sum(p.numel() for p in model.parameters())
        result.metrics.update({
            "train_steps": state.step, f"train_{unit}": state.tokens_seen,
            "train_time_s": state.elapsed_s, "best_step": state.best_step,
            f"train_{unit}_per_s": state.timed_tokens / max(state.step_time_s, 1e-9),
        })
        if metrics:
            metrics.log(state.step, {f"final/{k}": v for k, v in result.metrics.items()})
            metrics.close()
        status = "stopped" if stopped_early else "completed"
        store.update_run(run_id, status=status, step=state.step, metrics=result.metrics)
        if register:
            report(Progress("register", state.step, cfg.steps, message=recipe.name))
            result.model_ref = register_model(
                store, recipe, family, model_config, model, dataset, run_id,
                result.metrics, result.samples, parent_ref,
            )
        report(Progress("done", state.step, cfg.steps, message=result.model_ref or run_id))
    if ddp.world > 1:
        dist.barrier()
    return result


class _Diverged(Exception):
    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss


def _save_last_good(model: torch.nn.Module, checkpoint: Callable[[str], None], ckpt_dir: Path) -> Path:
    """Keep a loadable checkpoint: the current weights if still finite, else the last saved."""
    finite = all(torch.isfinite(p).all() for p in model.parameters())
    if finite:
        checkpoint("last")
    return ckpt_dir / "last"


def use_compile(cfg: TrainConfig, family: Family | None = None) -> bool:
    """torch.compile pays for its start-up (~30 s on 2 cores) only on longer runs, and on CPU
    it needs a C++ compiler for the kernels it generates. ``auto`` is measured for text models
    only: image objectives draw from a generator inside the graph, which compile splits."""
    if cfg.compile != "auto":
        return bool(cfg.compile)
    if family is not None and (family.modality != "text" or family.train_step is not None):
        return False
    return cfg.steps >= 1000 and (torch.cuda.is_available() or shutil.which("c++") is not None)


def pick_device(cfg: TrainConfig) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        rank = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", rank)
    return torch.device("cpu")


def autocast(cfg: TrainConfig, device_type: str = "cpu"):
    """bf16 autocast as the recipe asks: matmuls in bf16, reductions and losses in fp32."""
    on = cfg.precision == "bf16" or (cfg.precision == "auto" and fast_bf16(device_type))
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=on)


def register_model(
    store: Store, recipe: Recipe, family: Family, model_config, model: torch.nn.Module,
    dataset: TextDataset | ImageDataset, run_id: str, metrics: dict[str, float], samples: list[str],
    parent: str | None,
) -> str:
    """Stage the model directory completely, then register it as ``name@N``.

    Beside weights and config it holds what generation needs from the data: the tokenizer of a
    text model, the class names of an image model (``labels.json``) and its sample grid."""
    staging = settings().models_dir / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        save_weights(model, staging / "weights.safetensors")
        atomic_write_text(staging / "config.json", config_json(family, model_config))
        if isinstance(dataset, TextDataset):
            save_tokenizer(dataset.tokenizer, staging / "tokenizer.json")
        else:
            atomic_write_json(staging / "labels.json", list(dataset.class_names))
            if samples:
                shutil.copyfile(samples[0], staging / "samples.png")
                samples = ["samples.png"]
        atomic_write_text(staging / "recipe.yaml", recipe.to_yaml())
        atomic_write_json(staging / "metrics.json", metrics)
        lineage = {"dataset": dataset.name, "dataset_hash": dataset.hash,
                   "recipe_hash": recipe.hash(), "parent": parent, "run_id": run_id}
        atomic_write_json(staging / "lineage.json", lineage)
        atomic_write_json(staging / "samples.json", samples)
        version = store.register_model(
            recipe.name, staging, family=family.name, dataset_hash=dataset.hash,
            recipe_hash=recipe.hash(), parent=parent, run_id=run_id, metrics=metrics,
        )
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    card = model_card(version.ref, family, model_config, recipe, dataset.meta, metrics,
                      samples, lineage)
    atomic_write_text(Path(version.path) / "card.md", card)
    return version.ref
