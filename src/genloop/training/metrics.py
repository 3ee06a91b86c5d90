"""A run's metrics log: ``metrics.jsonl`` (always) and TensorBoard (if the recipe asks).

One JSON object per line, ``{"step", "time", ...values}``; a resumed run first drops the lines
logged after the checkpoint it resumes from, so the log holds each step once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from genloop.atomic import atomic_write_text


class MetricsLog:
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
