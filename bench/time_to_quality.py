"""Time to quality: how soon genloop's time-to-quality recipe reaches what a faithful nanoGPT run
reaches in 12,000 steps, and where it gets within the same wall time; tang-poems in that budget.

    python -m bench.time_to_quality [--iters 12000] [--quick]

One command, one run at a time (never two trainings at once):

1. the baseline, ``bench/baseline_gpt.py`` (nanoGPT's model.py + train.py at the small CPU
   setting: 4×4×128, context 64, batch 12, lr 1e-3, fp32, no compile) as its own process,
   ``--max_iters 12000 --lr_decay_iters 12000``; its wall time, spawn to exit, is the budget B;
2. genloop's ``shakespeare-fast`` as its own process, its steps sized by a short calibration
   process (so the cosine schedule ends inside the budget) and ``train.time_limit_s`` set so that
   training stops B seconds after the process started (imports and data included);
3. the same for ``tang-poems-fast`` in the same budget B.

The measure — the same for every point compared: mean cross-entropy (nats/char) over every
target of the whole validation split (111,540 characters of tinyshakespeare), read in
non-overlapping windows of the model's own context (``genloop.evaluation.text.validation_nll``,
for both models). genloop's curve is its weights snapshotted every ``B / 40`` seconds of its
process (a copy to disk, ~10 ms) and scored after the run; the baseline's final figure is its
best checkpoint (nanoGPT keeps the best-val one) scored the same way. The baseline's curve in
the plot is its own ``estimate_loss`` (20 random batches of 12 × 64), drawn dashed: nanoGPT does
not keep its intermediate weights. The ratio is the time genloop's curve first reaches the
baseline's final loss (linear between snapshots), over B. Each genloop figure is also given at
context 64, the baseline's.

Tang poems: bits per character over every character of the validation poems (titles, line
breaks and each poem's end token included); the characters never seen in training are
``<unk>`` tokens and count as characters like any other, scored by the model's probability of
``<unk>`` (the report gives how many there are).
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # the child's process start, before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from bench.common import RESULTS, ROOT, save, table  # noqa: E402

OUT = ROOT / "bench" / "out" / "time_to_quality"
SNAPSHOTS = 40
TARGET_RATIO, TARGET_LOSS, TARGET_BPC = 0.5, 1.45, 6.0
# what the bench sets on top of the recipe: no periodic checkpoints (the snapshots are the
# curve), no tensorboard; everything else is the recipe's
BENCH_SET = ["train.checkpoint_every=1000000", "train.tensorboard=false"]


# --- the genloop child process ------------------------------------------------------------------


def child(recipe: str, overrides: list[str], budget_s: float | None, out_dir: Path,
          snapshot_every_s: float) -> None:
    """Train ``recipe`` in this process, snapshotting the judged weights every
    ``snapshot_every_s`` of process time; stop training ``budget_s`` after the process began;
    then score every snapshot and write ``out_dir/child.json``."""
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from genloop.evaluation.text import logits_of, validation_nll
    from genloop.training import loop
    from genloop.training.runtime import seeded_rng

    out_dir.mkdir(parents=True, exist_ok=True)
    snaps: list[dict[str, Any]] = []
    holder: dict[str, Any] = {}

    def snapshot(step: int) -> None:
        run = holder["run"]
        path = out_dir / f"snap-{len(snaps):03d}.safetensors"
        state = {k: v.detach().float().clone() for k, v in run.judged.state_dict().items()}
        wall = time.perf_counter() - T_PROCESS
        save_file(state, str(path))
        snaps.append({"wall_s": wall, "step": step, "path": str(path)})

    def report(p: loop.Progress) -> None:
        if p.phase == "train" and "run" in holder and (
                not snaps or time.perf_counter() - T_PROCESS - snaps[-1]["wall_s"] >= snapshot_every_s):
            snapshot(p.step)

    with seeded_rng(None):
        run = loop.start(recipe, overrides=[*BENCH_SET, *overrides], report=report)
        holder["run"] = run
        if budget_s is not None:  # the budget counts from the process's start
            run.cfg.time_limit_s = max(1.0, budget_s - (time.perf_counter() - T_PROCESS))
        t_fit = time.perf_counter() - T_PROCESS
        loop.fit(run)
        snapshot(run.state.step)
        t_trained = time.perf_counter() - T_PROCESS
        result = loop.finish(run, register=True)
    t_finished = time.perf_counter() - T_PROCESS
    # score the snapshots: the whole validation split, own context and the baseline's 64
    model, val = run.model, run.dataset.val
    block = run.model_config.block_size
    n_chars = len(val) - 1
    model.eval()
    for s in snaps:
        model.load_state_dict(load_file(s["path"]), strict=False)
        nll, n = validation_nll(logits_of(model), val, block)
        s["val_loss"] = nll / n
        Path(s["path"]).unlink()
    nll64, n64 = validation_nll(logits_of(model), val, min(64, block))  # the last snapshot
    unk = run.dataset.tokenizer.unk_id
    figures = {"recipe": recipe, "overrides": overrides, "metrics": result.metrics,
               "model": result.model_ref, "curve": snaps, "fit_start_s": t_fit,
               "trained_s": t_trained, "finished_s": t_finished, "block_size": block,
               "last_val_loss_ctx64": nll64 / n64, "val_targets": n_chars,
               "steps": run.state.step, "threads": torch.get_num_threads(),
               "unknown_in_val": 0 if unk is None else int((np.asarray(val) == unk).sum())}
    (out_dir / "child.json").write_text(json.dumps(figures, indent=2) + "\n")


# --- the parent: run the three, one after another -------------------------------------------


def spawn(args: list[str], log: Path) -> float:
    """Run a process to its end (output to ``log``); its wall time, spawn to exit."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        done = subprocess.run(args, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())
    if done.returncode != 0:
        tail = log.read_text().strip().splitlines()[-1:] or [""]
        raise SystemExit(f"{' '.join(args[:4])} failed ({done.returncode}): {tail[0]} (log: {log})")
    return time.perf_counter() - t0


def run_baseline(iters: int, out_dir: Path, extra: list[str]) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    wall = spawn([sys.executable, "bench/baseline_gpt.py", "--max_iters", str(iters), "--lr_decay_iters",
                  str(iters), "--out_dir", str(out_dir), "--quiet", *extra], out_dir / "log.txt")
    summary = json.loads((out_dir / "summary.json").read_text())
    return {"wall_s": wall, "summary": summary, **score_baseline(summary)}


def score_baseline(summary: dict[str, Any]) -> dict[str, float]:
    """The baseline's judged weights (its best checkpoint) on the whole validation split."""
    import numpy as np

    from bench.baseline_gpt import load_checkpoint
    from genloop.evaluation.text import validation_nll

    model = load_checkpoint(summary["checkpoint"]).eval()
    data_dir = Path(summary["config"]["data_dir"] or Path(summary["config"]["out_dir"]).parent
                    / "data-shakespeare-char")
    val = np.fromfile(data_dir / "val.bin", dtype=np.uint16).astype(np.int64)
    nll, n = validation_nll(lambda x: model(x, x)[0], val, int(summary["config"]["block_size"]))
    return {"val_loss": nll / n, "val_targets": n}


def run_genloop(recipe: str, overrides: list[str], budget: float, out_dir: Path,
                calibrate_steps: int | None, log_name: str) -> dict[str, Any]:
    """Calibrate (steps/s of the recipe here), then train it in the budget as its own process."""
    base = [sys.executable, "-m", "bench.time_to_quality", "--child", recipe]
    sets = [a for o in overrides for a in ("--set", o)]
    figures: dict[str, Any] = {}
    if calibrate_steps:
        probe_dir = out_dir / f"{log_name}-probe"
        spawn([*base, "--out", str(probe_dir), "--snapshot-every", "1e9", *sets,
               "--set", f"train.steps={calibrate_steps}", "--set", "eval.num_samples=0",
               "--set", "eval.full_validation=false", "--set", f"train.eval_every={calibrate_steps}"],
              out_dir / f"{log_name}-probe.log")
        probe = json.loads((probe_dir / "child.json").read_text())
        m = probe["metrics"]
        step_s = m["train_tokens"] / m["train_tokens_per_s"] / m["train_steps"]
        # what the probe spent beyond its timed steps: imports, data, build, compilation, warm-up
        overhead = probe["trained_s"] - calibrate_steps * step_s
        evals = 1.02  # periodic validation estimates: ~2% of a run (eval_batches small)
        steps = int(0.98 * (budget - overhead) / (step_s * evals))
        figures["calibration"] = {"steps": calibrate_steps, "step_s": step_s, "overhead_s": overhead,
                                  "planned_steps": steps}
        overrides = [*overrides, f"train.steps={steps}"]
        sets += ["--set", f"train.steps={steps}"]
    child_dir = out_dir / log_name
    wall = spawn([*base, "--out", str(child_dir), "--budget", str(budget),
                  "--snapshot-every", str(budget / SNAPSHOTS), *sets], out_dir / f"{log_name}.log")
    figures.update(json.loads((child_dir / "child.json").read_text()))
    figures["process_wall_s"] = wall
    return figures


def crossing(curve: list[dict[str, Any]], target: float) -> float | None:
    """The first wall time the curve reaches ``target`` (linear between points), or None."""
    for a, b in zip([None, *curve[:-1]], curve, strict=True):
        if b["val_loss"] <= target:
            if a is None or a["val_loss"] == b["val_loss"]:
                return float(b["wall_s"])
            f = (a["val_loss"] - target) / (a["val_loss"] - b["val_loss"])
            return float(a["wall_s"] + f * (b["wall_s"] - a["wall_s"]))
    return None


def draw(baseline: dict[str, Any], genloop: dict[str, Any], path: Path) -> Path | None:
    """Validation loss against wall time, both runs, as a PNG (None without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ev = [e for e in baseline["summary"]["evals"] if e["iter"] > 0]
    ax.plot([e["wall_s"] / 60 for e in ev], [e["val_loss"] for e in ev], ls="--", color="C0", lw=1,
            label="nanoGPT baseline: its own estimate (20 random val batches)")
    ax.plot([baseline["wall_s"] / 60], [baseline["val_loss"]], "o", color="C0",
            label=f"baseline final, whole split: {baseline['val_loss']:.3f}")
    c = [s for s in genloop["curve"] if s["step"] > 0]
    ax.plot([s["wall_s"] / 60 for s in c], [s["val_loss"] for s in c], marker="o", ms=3, color="C1",
            label=f"genloop {genloop['recipe']}, whole split")
    ax.axhline(TARGET_LOSS, color="grey", ls=":", lw=1, label=f"target {TARGET_LOSS}")
    ax.axhline(baseline["val_loss"], color="C0", ls=":", lw=0.8)
    ax.set_xlabel("wall time since process start (minutes)")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("tinyshakespeare, character level")
    lows = [s["val_loss"] for s in c] + [e["val_loss"] for e in ev]
    ax.set_ylim(min(lows) - 0.05, min(2.6, max(lows) + 0.05))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def markdown(f: dict[str, Any]) -> str:
    b, g, t = f["baseline"], f["genloop"], f.get("tang")
    gm = g["metrics"]
    ratio = f["ratio"]
    rows = [["nanoGPT baseline (`bench/baseline_gpt.py`, 4×4×128, ctx 64, batch 12)",
             b["summary"]["iters"], f"{b['summary']['tokens_per_s']:,.0f}", b["wall_s"], "—",
             b["val_loss"], b["val_loss"]],
            [f"genloop `{g['recipe']}` ({g['block_size']} ctx)", gm["train_steps"],
             f"{gm['train_tokens_per_s']:,.0f}", g["process_wall_s"], g["trained_s"], gm["val_loss"],
             g["last_val_loss_ctx64"]]]
    lines = [
        f"## Time to quality: tinyshakespeare in the baseline's {b['summary']['iters'] - 1:,} steps",
        "",
        "One command, one training at a time: the faithful nanoGPT baseline as its own process "
        f"({b['summary']['iters'] - 1:,} iterations; its wall time, spawn to exit, is the budget: "
        f"**{f['budget_s']:.0f} s**), then genloop's `{g['recipe']}` as its own process, its steps "
        "sized by a calibration run and training stopped the budget after its process started. "
        "Loss: mean cross-entropy over every character of the whole validation split, in "
        "non-overlapping windows of each model's context, the same function for both; genloop's "
        f"curve from weight snapshots every {f['budget_s'] / SNAPSHOTS:.0f} s scored after the run. "
        "Last column: the same weights scored at the baseline's context, 64.",
        "",
        table(["run", "steps", "train tokens/s", "process wall (s)", "trained by (s)",
               "val loss (whole split)", "at context 64"], rows),
        "",
        f"- genloop reached the baseline's final loss ({b['val_loss']:.3f}) after "
        + (f"**{f['cross_s']:.0f} s = {ratio:.2f}× the baseline's wall time** (target ≤ {TARGET_RATIO}×)"
           if ratio is not None else "— **never** within the budget")
        + ".",
        f"- genloop's validation loss within the budget: **{gm['val_loss']:.3f}** (target ≤ {TARGET_LOSS}).",
    ]
    if t:
        tm = t["metrics"]
        lines.append(f"- tang-poems (`{t['recipe']}`) in the same budget: **{tm['bits_per_char']:.3f} "
                     f"bits/char** (target ≤ {TARGET_BPC}; val loss {tm['val_loss']:.3f} nats over "
                     f"{t['val_targets']:,} characters, of which {t.get('unknown_in_val', 0):,} "
                     f"never seen in training and scored as `<unk>`), {tm['train_steps']:,} steps.")
    sized = (f"steps from a {g['calibration']['steps']}-step calibration run"
             if g.get("calibration") else "no calibration")
    lines += ["", f"Recipe overrides: `{' '.join(g['overrides']) or 'none'}` ({sized}).", ""]
    if f.get("plot"):
        lines.append("![validation loss against wall time](bench/results/time_to_quality.png)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--iters", type=int, default=12000, help="the baseline's iterations")
    ap.add_argument("--recipe", default="shakespeare-fast")
    ap.add_argument("--tang-recipe", default="tang-poems-fast")
    ap.add_argument("--no-tang", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--quick", action="store_true", help="100 baseline steps, 100 eager genloop steps, "
                    "no calibration: a smoke test (bench/out/time_to_quality; BENCHMARKS.md untouched)")
    ap.add_argument("--child", help=argparse.SUPPRESS)  # a genloop training process
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--snapshot-every", type=float, default=10.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))
    if args.child:
        child(args.child, args.overrides, args.budget, args.out, args.snapshot_every)
        return
    iters = 100 if args.quick else args.iters
    if args.quick:  # one thread each: a smoke test that finishes on shared cores
        os.environ["OMP_NUM_THREADS"] = "1"
    quick = (["train.steps=100", "train.compile=false", "eval.num_samples=0", "train.threads=1"]
             if args.quick else [])
    calibrate = None if args.quick else 300
    OUT.mkdir(parents=True, exist_ok=True)
    # 1. the baseline: its wall time is the budget
    baseline = run_baseline(iters, OUT / "baseline",
                            ["--eval_interval", "50", "--eval_iters", "5", "--warmup_iters", "10"]
                            if args.quick else [])
    budget = baseline["wall_s"]
    # 2. genloop's best recipe in the budget
    genloop = run_genloop(args.recipe, [*quick, *args.overrides], budget, OUT, calibrate, "genloop")
    cross = crossing(genloop["curve"], baseline["val_loss"])
    figures: dict[str, Any] = {"iters": iters, "budget_s": budget, "baseline": baseline,
                               "genloop": genloop, "cross_s": cross,
                               "ratio": None if cross is None else cross / budget}
    # 3. tang-poems in the same budget
    if not args.no_tang:
        figures["tang"] = run_genloop(args.tang_recipe, quick, budget, OUT, calibrate, "tang")
    png = (OUT / "quick.png") if args.quick else RESULTS / "time_to_quality.png"
    figures["plot"] = str(draw(baseline, genloop, png) or "")
    md = markdown(figures)
    if args.quick:  # a smoke test: its figures mean nothing, BENCHMARKS.md stays as it is
        (OUT / "quick.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(md, f"\n(--quick: {OUT / 'quick.json'}; BENCHMARKS.md untouched)")
        return
    save("time_to_quality", figures, md)
    print(md)


if __name__ == "__main__":
    main()
