"""DDP: two gloo processes on CPU train the same recipe as one process with the same global batch.

The two runs see different batches (the data order depends on the rank), so their loss curves
are two samples of the same noisy process, not equal. With a global batch of 8 x 32 tokens the
per-step loss noise is about 0.05-0.1 nats; smoothed over 5 steps the two curves of a correct
implementation stay within a few hundredths of each other, while a broken one (ranks not
averaging gradients, a per-rank batch of the global size, a wrong LR) drifts by far more than
0.15 over 40 steps. The final validation loss is measured on the same fixed windows, so it agrees
more tightly (0.1).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from genloop.store import Store
from genloop.training.loop import train

from ..conftest import BIN, tiny_recipe_dict, workspace_env  # noqa: TID252

STEPS = 40


def curve(run_dir: Path) -> tuple[np.ndarray, float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = np.array([x["train/loss"] for x in rows if "train/loss" in x])
    final = next(x["final/val_loss"] for x in rows if "final/val_loss" in x)
    return losses, final


def smooth(x: np.ndarray, k: int = 5) -> np.ndarray:
    return np.convolve(x, np.ones(k) / k, mode="valid")


def test_cli_module_runs():
    r = subprocess.run([sys.executable, "-m", "genloop.cli.main", "--help"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "train" in r.stdout


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path, corpus, workspace):
    recipe = tiny_recipe_dict(corpus, name="ddp", steps=STEPS, batch_size=8)
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump(recipe))
    home = tmp_path / "ddp-home"
    torchrun = BIN / "torchrun"
    cmd = ([str(torchrun)] if torchrun.exists() else [sys.executable, "-m", "torch.distributed.run"])
    proc = subprocess.Popen(
        [*cmd, "--standalone", "--nproc_per_node=2", "-m", "genloop.cli.main", "train",
         str(recipe_file)],
        env=workspace_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    single = train(recipe)  # meanwhile, the single-process run in `workspace`
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]

    runs = list((home / "runs").iterdir())
    assert len(runs) == 1
    ddp_losses, ddp_final = curve(runs[0])
    one_losses, one_final = curve(single.run_dir)
    assert len(ddp_losses) == len(one_losses) == STEPS  # rank 0 alone logs, once per step
    assert np.isfinite(ddp_losses).all()
    assert ddp_losses[-5:].mean() < ddp_losses[:5].mean() - 0.3  # it learns
    gap = np.abs(smooth(ddp_losses) - smooth(one_losses)).mean()
    assert gap < 0.15, gap
    assert abs(ddp_final - one_final) < 0.1, (ddp_final, one_final)

    # exactly one version, registered by rank 0
    with_env = workspace_env(home)
    listing = subprocess.run(
        [sys.executable, "-c", "from genloop.store import Store; "
         "print(' '.join(v.ref for v in Store().list_models()))"],
        env=with_env, capture_output=True, text=True, timeout=60)
    assert listing.stdout.split() == ["ddp@1"], listing.stderr
    assert [v.ref for v in Store().list_models()] == ["ddp@1"]  # the single run's own workspace
