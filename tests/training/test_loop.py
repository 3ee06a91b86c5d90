"""The training loop: registration with card, metrics and lineage; versions; fine-tuning; the LR
schedule; the data order; divergence; the LSTM family."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genloop.errors import TrainingDiverged
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.training.loop import batch_at, lr_at, train
from genloop.training.recipe import TrainConfig, load_recipe


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_runs_register_versions_with_card_metrics_lineage_and_parent(workspace, tiny_recipe):
    recipe = tiny_recipe(name="poem", steps=30)
    first = train(recipe)
    assert first.model_ref == "poem@1"
    store = Store()
    v1 = store.resolve("poem@1")
    d = Path(v1.path)
    for f in ("weights.safetensors", "config.json", "tokenizer.json", "card.md", "lineage.json",
              "metrics.json", "recipe.yaml"):
        assert (d / f).is_file(), f
    assert math.isfinite(first.metrics["val_loss"]) and first.metrics["train_steps"] == 30
    assert v1.metrics["val_loss"] == pytest.approx(first.metrics["val_loss"])
    card = (d / "card.md").read_text()
    assert card.startswith("# poem@1") and "## Metrics" in card and "validation loss" in card
    assert f"{first.metrics['val_loss']:.3f}" in card  # the number itself is on the card

    lines = read_metrics(first.run_dir)
    train_lines = [x for x in lines if "train/loss" in x]
    assert [x["step"] for x in train_lines] == list(range(1, 31))  # log_every=1
    assert all(math.isfinite(x["train/loss"]) for x in train_lines)
    assert any("val/loss" in x for x in lines) and any("final/val_loss" in x for x in lines)

    run = store.get_run(first.run_id)
    assert run.status == "completed" and run.step == 30
    lineage = json.loads((d / "lineage.json").read_text())
    assert lineage["run_id"] == first.run_id == v1.run_id
    assert lineage["dataset_hash"] == run.dataset_hash == v1.dataset_hash
    assert store.get_dataset(run.dataset_hash).path
    assert lineage["recipe_hash"] == load_recipe(recipe).hash() == v1.recipe_hash == run.recipe_hash
    assert lineage["parent"] is None and v1.parent is None
    assert not list(d.parent.parent.glob(".staging*"))

    # a fine-tune of poem@1 is poem@2, records its parent and starts from the parent's weights
    child = train({**recipe, "parent": "poem@1"})
    assert child.model_ref == "poem@2"
    v2 = store.resolve("poem")
    assert v2.version == 2 and v2.parent == "poem@1"
    assert json.loads((Path(v2.path) / "lineage.json").read_text())["parent"] == "poem@1"
    first_loss = read_metrics(first.run_dir)[0]["train/loss"]
    child_loss = read_metrics(child.run_dir)[0]["train/loss"]
    assert child_loss < first_loss - 0.3, (child_loss, first_loss)
    assert [v.ref for v in store.list_models()] == ["poem@1", "poem@2"]


@pytest.mark.parametrize(("steps", "warmup", "lr", "min_lr"), [
    (100, 10, 1e-3, None), (50, 0, 2e-3, 1e-5), (7, 3, 0.5, 0.0), (1, 0, 1e-3, None),
])
def test_lr_schedule_warms_up_then_decays_to_floor_at_last_step(steps, warmup, lr, min_lr):
    cfg = TrainConfig(steps=steps, warmup_steps=warmup, lr=lr, min_lr=min_lr)
    sched = [lr_at(s, cfg) for s in range(steps)]
    assert all(0 <= x <= lr * (1 + 1e-12) for x in sched)
    warm = sched[:warmup]
    assert all(a < b for a, b in zip(warm, warm[1:], strict=False))  # strictly rising
    if warmup:
        assert sched[0] == pytest.approx(lr / warmup) and sched[warmup - 1] == pytest.approx(lr)
    decay = sched[warmup:]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False))  # never rises again
    if steps > warmup + 1:
        assert decay[0] == pytest.approx(lr)
        assert sched[-1] == pytest.approx(cfg.floor_lr, abs=1e-12)  # the floor at the last step
    assert cfg.floor_lr == (lr / 10 if min_lr is None else min_lr)


def test_batch_at_is_a_pure_function_of_seed_step_micro_rank():
    data = torch.arange(1000)
    kw = dict(batch=4, block=16)
    x, y = batch_at(data, 5, 0, seed=3, rank=0, **kw)
    assert x.shape == y.shape == (4, 16)
    assert torch.equal(x[:, 1:], y[:, :-1]) and torch.equal(y, x + 1)  # targets are shifted
    torch.manual_seed(123)  # the global RNG plays no part
    torch.rand(10)
    again = batch_at(data, 5, 0, seed=3, rank=0, **kw)
    assert torch.equal(again[0], x) and torch.equal(again[1], y)
    for other in [dict(step=6), dict(micro=1), dict(rank=1), dict(seed=4)]:
        args = dict(step=5, micro=0, seed=3, rank=0) | other
        ox, _ = batch_at(data, args.pop("step"), args.pop("micro"), **args, **kw)
        assert not torch.equal(ox, x), other


def test_divergence_raises_and_keeps_a_finite_last_checkpoint(workspace, tiny_recipe):
    # lr at its maximum with the largest weight decay multiplies the weights by (1 - 1.0 * 10) = -9
    # every step, with no clipping or warmup: the loss (or its gradient) overflows in a few steps
    recipe = tiny_recipe(name="boom", steps=60, lr=1.0, grad_clip=0, warmup_steps=0,
                         weight_decay=10, checkpoint_every=2, eval_every=1000)
    with pytest.raises(TrainingDiverged, match="non-finite") as e:
        train(recipe)
    store = Store()
    (run,) = store.list_runs()
    assert run.status == "diverged" and run.step < 60 and "non-finite" in run.error
    assert store.list_models() == []  # nothing registered
    last = Path(run.path) / "checkpoints" / "last"
    assert str(last) in str(e.value)
    assert last.is_symlink() and last.resolve().is_dir()
    _, _, model = ModelDir(last).load()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    weights = load_file(str(last / "weights.safetensors"))
    assert weights and all(torch.isfinite(t).all() for t in weights.values())
    assert not list((Path(run.path) / "checkpoints").glob(".*tmp"))


def test_lstm_tiny_run(workspace, tiny_recipe):
    result = train(tiny_recipe(name="rnn", family="lstm", steps=20))
    assert result.model_ref == "rnn@1"
    assert math.isfinite(result.metrics["val_loss"])
    v = Store().resolve("rnn")
    assert v.family == "lstm"
    family, _, model = ModelDir(Path(v.path)).load()
    assert family.name == "lstm"
    losses = [x["train/loss"] for x in read_metrics(result.run_dir) if "train/loss" in x]
    assert losses[-1] < losses[0]


def test_same_recipe_with_dropout_trains_to_the_same_weights(tmp_path, monkeypatch, tiny_recipe):
    """Dropout draws from the global RNG; the loop seeds it from the recipe (regression: two
    runs of one recipe in one process used to differ, so a resume could not be checked), inside
    the run only: the caller's RNG is left as it was."""
    recipe = tiny_recipe(name="drop", steps=8)
    recipe["model"]["config"]["dropout"] = 0.2
    weights = []
    for home in ("h1", "h2"):
        monkeypatch.setenv("GENLOOP_HOME", str(tmp_path / home))
        torch.rand(3)  # whatever the caller did with the RNG before
        caller = torch.get_rng_state()
        result = train(recipe, register=False)
        assert torch.equal(torch.get_rng_state(), caller)  # and the run leaves it as it was
        weights.append(load_file(str(result.run_dir / "checkpoints" / "last" / "weights.safetensors")))
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_periodic_evaluation_runs_every_n_steps_and_keeps_the_best(workspace, tiny_recipe):
    result = train(tiny_recipe(steps=30, eval_every=10))
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    vals = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r]
    assert [s for s, _ in vals] == [10, 20, 30]
    assert all(math.isfinite(v) for _, v in vals)
    best_step = min(vals, key=lambda sv: sv[1])[0]
    assert result.metrics["best_step"] == best_step
