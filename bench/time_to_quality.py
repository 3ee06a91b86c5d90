"""Time to quality: the best validation loss a genloop recipe reaches on tinyshakespeare within a
fixed training budget (default 10 minutes), with validation loss plotted against wall time.

    python -m bench.time_to_quality [--minutes 10] [--set model.config.n_embd=192 ...]

The recipe is the built-in ``shakespeare-char`` with the overrides below (context 128, batch 16,
lr 4e-3: the best of the attempts in BENCHMARKS.md's notes; a 4×192 model with context 256 did
worse, 1.584, in the same budget). The number of steps is fixed from a short calibration run so the cosine
schedule ends inside the budget; ``train.time_limit_s`` is a hard stop on top. Wall time counts
everything: compilation, evaluations, checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bench.common import RESULTS, ROOT, save, table

RECIPE = [
    "model.config.block_size=128",
    "model.config.n_layer=4",
    "model.config.n_head=4",
    "model.config.n_embd=128",
    "model.config.dropout=0.0",
    "train.batch_size=16",
    "train.lr=4e-3",
    "train.warmup_steps=100",
    "train.eval_every=250",
    "train.eval_batches=10",
    "train.checkpoint_every=1000000",
    "train.tensorboard=false",
    "eval.num_samples=2",
]


def curve(run_dir: Path) -> list[tuple[float, float]]:
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "val/loss" in row:
            points.append((row["elapsed_s"], row["val/loss"]))
    return points


def draw(points: list[tuple[float, float]], final: float, path: Path) -> Path | None:
    """Validation loss against wall time, as a PNG (None if matplotlib is not installed)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p[0] / 60 for p in points], [p[1] for p in points], marker="o", ms=3,
            label="genloop (validation estimate during training)")
    ax.axhline(1.45, color="grey", ls="--", lw=1, label="target 1.45")
    ax.axhline(final, color="C1", ls=":", lw=1, label=f"final, full validation split: {final:.3f}")
    ax.set_xlabel("wall time (minutes)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("tinyshakespeare, character level, 2 CPU cores")
    ax.set_ylim(1.3, 2.6)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))
    from genloop.training.loop import train

    overrides = RECIPE + args.overrides
    # 1. calibrate: steps/s of this recipe here (after compilation), to size the schedule
    probe = train("shakespeare-char", overrides=overrides + [
        "train.steps=150", "train.compile=true", "eval.num_samples=0", "eval.full_validation=false",
        "train.eval_every=1000"], register=False)
    tokens_per_step = probe.metrics["train_tokens"] / probe.metrics["train_steps"]
    steps_per_s = probe.metrics["train_tokens_per_s"] / tokens_per_step
    budget = args.minutes * 60
    # leave room for compilation (~35 s), periodic evaluation and the final full evaluation
    steps = int((budget - 75) * steps_per_s)
    t0 = time.time()
    result = train("shakespeare-char", overrides=overrides + [
        f"train.steps={steps}", f"train.time_limit_s={budget}", "name=shakespeare-10min"])
    wall = time.time() - t0
    m = result.metrics
    points = curve(result.run_dir)
    figures = {"minutes": args.minutes, "recipe_overrides": overrides, "steps": steps,
               "metrics": m, "model": result.model_ref, "curve": points, "wall_s": wall}
    plot = draw(points, m["val_loss"], RESULTS / "time_to_quality.png")
    md = "\n".join([
        f"## Time to quality: tinyshakespeare in {args.minutes:g} minutes",
        "",
        "Built-in `shakespeare-char` recipe with: `" + " ".join(overrides) + f"`, {steps} steps "
        "(sized by a 150-step calibration run so the cosine schedule ends inside the budget).",
        "",
        table(["model", "steps", "training wall time (s)", "val loss (full split)", "bits/char"],
              [[result.model_ref, m["train_steps"], m["train_time_s"], m["val_loss"],
                m["bits_per_char"]]]),
        "",
        f"**Best validation loss within {args.minutes:g} minutes: {m['val_loss']:.3f} "
        "(target ≤ 1.45).**",
        "",
        "![validation loss against wall time](bench/results/time_to_quality.png)" if plot else "",
    ])
    save("time_to_quality", figures, md)
    print(md)


if __name__ == "__main__":
    main()
