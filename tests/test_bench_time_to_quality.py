"""bench/time_to_quality: the crossing of a curve with the baseline's loss, and the report."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: bench/

from bench.time_to_quality import crossing, markdown  # noqa: E402


def _curve(*points: tuple[float, float]) -> list[dict]:
    return [{"wall_s": t, "step": i * 10, "val_loss": v} for i, (t, v) in enumerate(points)]


def test_crossing_interpolates_between_snapshots() -> None:
    curve = _curve((10, 3.0), (20, 2.0), (30, 1.5), (40, 1.4))
    assert crossing(curve, 1.75) == pytest.approx(25.0)
    assert crossing(curve, 1.5) == pytest.approx(30.0)
    assert crossing(curve, 3.5) == pytest.approx(10.0)  # already below at the first snapshot
    assert crossing(curve, 1.0) is None  # never reached


def test_crossing_takes_the_first_time_below() -> None:
    curve = _curve((10, 2.0), (20, 1.5), (30, 1.7), (40, 1.45))
    assert crossing(curve, 1.6) == pytest.approx(10 + 10 * 0.4 / 0.5)


def test_report_names_the_ratio_and_the_targets() -> None:
    baseline = {"wall_s": 400.0, "val_loss": 1.60,
                "summary": {"iters": 12001, "tokens_per_s": 23000.0, "evals": []}}
    genloop = {"recipe": "shakespeare-fast", "block_size": 256, "process_wall_s": 430.0,
               "trained_s": 399.0, "last_val_loss_ctx64": 1.5, "overrides": ["train.steps=9000"],
               "metrics": {"train_steps": 9000, "train_tokens_per_s": 60000.0, "val_loss": 1.44}}
    tang = {"recipe": "tang-poems-fast", "val_targets": 80000,
            "metrics": {"bits_per_char": 5.9, "val_loss": 4.09, "train_steps": 7000}}
    md = markdown({"baseline": baseline, "genloop": genloop, "tang": tang, "budget_s": 400.0,
                   "cross_s": 180.0, "ratio": 0.45})
    assert "0.45× the baseline's wall time" in md and "**1.440**" in md and "5.900 bits/char" in md
    never = markdown({"baseline": baseline, "genloop": genloop, "budget_s": 400.0, "cross_s": None,
                      "ratio": None})
    assert "**never**" in never and "tang" not in never.split("|")[-1]
