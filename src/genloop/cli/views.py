"""What train and quickstart show while a run goes: a progress bar, then the result table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from genloop.cli.console import out

# the objective figures an evaluation line shows beside the validation loss (preference tuning)
FIGURES = {"reward_accuracy": "reward acc", "reward_margin": "margin", "kl": "kl"}


class TrainView:
    """A progress bar with loss, tokens/s and ETA, plus a line per evaluation."""

    def __init__(self, console: Console):
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("loss [cyan]{task.fields[loss]}[/]"),
            TextColumn("[green]{task.fields[speed]}[/] {task.fields[unit]}/s"),
            TextColumn("eta {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task: Any = None

    def __call__(self, p: Any) -> None:
        if p.phase in ("data", "build", "register"):
            self.console.print(f"[dim]{p.phase}:[/] {p.message}", highlight=False)
            return
        if p.phase == "train":
            if self.task is None:
                self.bar.start()
                unit = "tok" if p.unit == "tokens" else "img"
                self.task = self.bar.add_task("train", total=p.steps, loss="-", speed="-", eta="-",
                                              unit=unit)
            eta = f"{int(p.eta_s // 60)}m{int(p.eta_s % 60):02d}s" if p.eta_s else "-"
            self.bar.update(self.task, completed=p.step, loss=f"{p.loss:.4f}",
                            speed=f"{p.tokens_per_s:,.0f}", eta=eta)
        elif p.phase == "eval" and p.val_loss is not None:
            figures = "".join(f"  {FIGURES[k]} {v:.4f}" for k, v in p.metrics.items() if k in FIGURES)
            self.bar.console.print(f"step {p.step:>6}  val loss {p.val_loss:.4f}{figures}")
        elif p.phase == "eval":
            self.stop()
            self.console.print(f"[dim]eval:[/] {p.message}")
        elif p.phase == "done":
            self.stop()

    def stop(self) -> None:
        if self.task is not None:
            self.bar.stop()
            self.task = None


RESULT_KEYS = ("val_loss", "bits_per_char", "perplexity", "distinct_2", "preference_accuracy",
               "preference_margin_nats", "desirability_gap_nats", "fid", "kid", "precision",
               "recall", "sample_accuracy", "test_nelbo_nats", "test_iw_nll_nats", "test_accuracy",
               "train_tokens_per_s", "train_images_per_s", "train_time_s")


def show_result(result: Any) -> None:
    """A finished run: its key metrics, up to two samples, and where the run lives."""
    table = Table(title=f"{result.model_ref or 'run ' + result.run_id}", show_header=False)
    for k in RESULT_KEYS:
        if k in result.metrics:
            v = result.metrics[k]
            table.add_row(k, f"{v:,.0f}" if k.endswith("_per_s") else f"{v:,.4f}")
    out.print(table)
    for s in result.samples[:2]:
        if s.endswith(".png"):
            out.print(f"[dim]samples:[/] {s}", highlight=False)
            continue
        out.print("[dim]---- sample ----[/]")
        out.print(s, markup=False, highlight=False)
    out.print(f"[dim]run:[/] {result.run_dir}")
