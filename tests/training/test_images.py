"""Image families on the one training loop: train → evaluate (FID/KID/PR with the dataset's own
feature extractor) → register → generate with provenance; divergence and kill -9 resume."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from genloop.errors import InvalidInput, RecipeError, TrainingDiverged
from genloop.generation.image import read_provenance
from genloop.generation.service import ImageModel, image_png, load
from genloop.models.modeldir import ModelDir
from genloop.store import Store
from genloop.training.loop import train

from ..conftest import tiny_image_recipe_dict, workspace_env  # noqa: TID252
from .test_resume import assert_complete, last_step, wait_for_run  # noqa: TID252

IMAGE_FAMILIES = ["diffusion", "gan", "vae"]


def test_every_image_family_trains_evaluates_registers_and_generates(workspace):
    store = Store()
    for family in IMAGE_FAMILIES:
        result = train(tiny_image_recipe_dict(family, steps=20))
        assert result.model_ref == f"tiny-{family}@1"
        m = result.metrics
        for key in ("fid", "kid", "precision", "recall", "inception_score", "sample_accuracy",
                    "sample_images_per_s", "train_images_per_s"):
            assert key in m and m[key] == m[key], (family, key)  # present and not NaN
        assert m["fid"] >= 0 and 0 <= m["precision"] <= 1 and 0 <= m["sample_accuracy"] <= 1
        if family == "vae":  # the family with a likelihood: both bounds, the IW one tighter-ish
            assert 0 < m["test_iw_nll_nats"] <= m["test_nelbo_nats"] * 1.05
        version = store.resolve(result.model_ref)
        assert version.metrics["fid"] == m["fid"]
        folder = Path(version.path)
        assert (folder / "samples.png").is_file() and (folder / "labels.json").is_file()
        assert "FID" in (folder / "card.md").read_text() and "samples.png" in (folder / "card.md").read_text()
    # one feature extractor, trained once for the dataset and shared by every row
    extractors = [v.ref for v in store.list_models() if v.family == "classifier"]
    assert extractors == ["digits-features@1"]
    assert store.resolve("digits-features@1").metrics["test_accuracy"] > 0.3

    model = load("tiny-diffusion")
    assert isinstance(model, ImageModel)
    a = model.generate(num_samples=4, seed=3, class_label="2", steps=3)
    b = model.generate(num_samples=4, seed=3, class_label=2, steps=3)
    assert [r.content_hash for r in a.records] == [r.content_hash for r in b.records]
    assert all(r.output == "2" and r.kind == "image" for r in a.records)
    stamp = read_provenance(io.BytesIO(image_png(a.records[0])))  # its own provenance
    assert stamp["model"] == "tiny-diffusion@1" and stamp["seed"] == 3
    assert stamp["content_hash"] == a.records[0].content_hash and stamp["request"]["steps"] == 3
    grid = a.save_grid(workspace / "grid.png")
    assert read_provenance(grid)["content_hashes"] == [r.content_hash for r in a.records]
    assert len(store.list_generations("tiny-diffusion")) == 8

    walk = load("tiny-vae").generate(num_samples=5, seed=1, interpolate=True)
    assert len({r.content_hash for r in walk.records}) > 1
    with pytest.raises(InvalidInput, match="latent space"):
        model.generate(num_samples=2, interpolate=True)
    with pytest.raises(InvalidInput, match="not a class"):
        model.generate(num_samples=2, class_label="eleven")
    with pytest.raises(InvalidInput, match="num_samples"):
        model.generate(num_samples=100_000)


def test_an_image_family_on_text_data_is_a_recipe_error(workspace, corpus):
    recipe = tiny_image_recipe_dict("diffusion")
    recipe["data"] = {"source": str(corpus)}
    recipe.pop("eval")
    with pytest.raises(RecipeError, match="trains on images data; data.source"):
        train(recipe)


@pytest.mark.parametrize("family,overrides", [
    ("diffusion", {"lr": 1.0, "weight_decay": 10}),
    ("gan", {"lr": 1.0, "weight_decay": 10}),
])
def test_a_diverging_image_run_stops_with_a_loadable_last_checkpoint(workspace, family, overrides):
    recipe = tiny_image_recipe_dict(family, name="boom", steps=200, grad_clip=0, warmup_steps=0,
                                    checkpoint_every=2, **overrides)
    with pytest.raises(TrainingDiverged, match="non-finite"):
        train(recipe)
    (run,) = Store().list_runs()
    assert run.status == "diverged" and run.step < 200
    last = Path(run.path) / "checkpoints" / "last"
    _, _, model = ModelDir(last).load()
    assert all(torch.isfinite(p).all() for p in model.parameters())


TRAIN = "import sys, genloop; genloop.train(sys.argv[1])"
RESUME = "import sys; from genloop.training.loop import train; train(None, resume=sys.argv[1])"


@pytest.mark.slow
@pytest.mark.parametrize("family", IMAGE_FAMILIES)
def test_kill_9_then_resume_is_bit_identical(tmp_path, family):
    recipe = tiny_image_recipe_dict(family, name="crash", steps=80, checkpoint_every=10, eval_every=40)
    recipe["eval"]["num_samples"] = 0  # the comparison is of weights; skip the extractor
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    home_a, home_b = tmp_path / "a", tmp_path / "b"

    def start(home: Path) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", TRAIN, str(recipe_file)], env=workspace_env(home),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    victim, reference = start(home_a), start(home_b)
    try:
        deadline = time.monotonic() + 120
        run_dir = wait_for_run(victim, home_a, deadline)
        ckpts = run_dir / "checkpoints"
        while last_step(ckpts) < 20:
            assert victim.poll() is None, f"finished before the kill: {victim.stderr.read()}"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait()
    assert 20 <= last_step(ckpts) < 80
    assert_complete(ckpts)
    resumed = subprocess.run([sys.executable, "-c", RESUME, run_dir.name], env=workspace_env(home_a),
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert reference.wait(timeout=120) == 0, reference.stderr.read()
    (ref_run,) = (home_b / "runs").iterdir()
    for name in ("weights.safetensors", "ema.safetensors"):
        got = load_file(str(ckpts / "last" / name))
        want = load_file(str(ref_run / "checkpoints" / "last" / name))
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), (name, family)
