"""Training speed against nanoGPT as it really runs: each run its own process, alone, alternating.

    python -m bench.train_speed [--steps 2000] [--rounds 2] [--paths native avx2] [--quick]
                                [--set train.lr=2e-3 ...]

tinyshakespeare, character level, 4 layers / 4 heads / 128 dims, context 64, batch 12, no dropout.
The baseline is ``bench/baseline_gpt.py``: nanoGPT's ``model.py`` + ``train.py`` at its small CPU
setting (fp32, no compile, its AdamW, eval every 250 iterations over 20 batches of train and val,
best-val checkpoints, a printed line per iteration), run as ``python bench/baseline_gpt.py
--max_iters N --lr_decay_iters N --out_dir DIR``. genloop is the real CLI, ``genloop train
shakespeare-char --set train.steps=N``, as a user runs it (data already prepared, as nanoGPT's
``prepare.py`` has been run). Per path, the two alternate — baseline, genloop, baseline, genloop
(``--rounds``) — one process at a time, nothing else of this bench running beside them.

Figures: training tokens/s (each's own count: step time of the iterations after the first 20, not
evaluations or checkpoints; the median over rounds), the whole process's wall time measured from
outside (spawn to exit: imports, data, compilation, evaluations, checkpoints, and for genloop the
final full-split evaluation, samples, model card and registration), and the validation loss over
the whole validation split (baseline: of its best-val checkpoint, computed here afterwards, outside
its process time; genloop: its final evaluation). Paths: ``native`` (whatever the CPU has: bf16
autocast where bf16 is native) and ``avx2`` (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``:
PyTorch's kernels held to AVX2, bf16 not native, so genloop trains fp32 — an AVX2-only machine).
nanoGPT runs max_iters + 1 optimizer steps (its loop includes iteration max_iters); genloop N.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.baseline_gpt import default_input, full_val_loss, load_checkpoint, prepare_data
from bench.common import PATHS, ROOT, probe, save, table

OUT = ROOT / "bench" / "out" / "train_speed"
TARGETS = {"native": 1.5, "avx2": 1.3}  # the issue's: a bf16-capable CPU, an AVX2-only one


def timed(cmd: list[str], env: dict[str, str], log: Path) -> float:
    """Run ``cmd`` to its end, its output into ``log``; the wall time from spawn to exit."""
    with log.open("w") as f:
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"{' '.join(cmd[:3])} failed ({proc.returncode}); its log {log}:\n{tail}")
    return wall


def eval_every(steps: int) -> int:
    """nanoGPT's eval_interval (250), or half the run for runs too short to reach it."""
    return min(250, max(1, steps // 2))


def run_baseline(steps: int, env: dict[str, str], out_dir: Path, data_dir: Path) -> dict[str, Any]:
    cmd = [sys.executable, str(ROOT / "bench" / "baseline_gpt.py"), "--max_iters", str(steps),
           "--lr_decay_iters", str(steps), "--out_dir", str(out_dir), "--data_dir", str(data_dir),
           "--eval_interval", str(eval_every(steps))]
    out_dir.mkdir(parents=True, exist_ok=True)
    wall = timed(cmd, env, out_dir / "stdout.log")
    s = json.loads((out_dir / "summary.json").read_text())
    val = float("nan")
    if s["checkpoint"]:
        val_ids = np.fromfile(data_dir / "val.bin", dtype=np.uint16).astype(np.int64)
        val = full_val_loss(load_checkpoint(s["checkpoint"]), val_ids, s["config"]["block_size"])
    return {"wall_s": wall, "tokens_per_s": s["tokens_per_s"], "val_loss": val,
            "step_ms_median": s["step_ms_median"], "startup_s": s["startup_s"],
            "train_loop_s": s["train_loop_s"], "iters": s["iters"]}


def run_genloop(steps: int, env: dict[str, str], log: Path, overrides: list[str]) -> dict[str, Any]:
    every = eval_every(steps)
    sets = [a for o in [f"train.steps={steps}", f"train.eval_every={every}",
                        f"train.checkpoint_every={every}", *overrides] for a in ("--set", o)]
    cmd = [sys.executable, "-m", "genloop.cli.main", "train", "shakespeare-char", *sets]
    wall = timed(cmd, env, log)
    run_dir = next(Path(line.split("run:", 1)[1].strip()) for line in log.read_text().splitlines()
                   if line.strip().startswith("run:"))
    final = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        final.update({k[len("final/"):]: v for k, v in json.loads(line).items() if k.startswith("final/")})
    return {"wall_s": wall, "tokens_per_s": final["train_tokens_per_s"], "val_loss": final["val_loss"],
            "train_time_s": final["train_time_s"], "run_dir": str(run_dir)}


def median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2, help="baseline, genloop pairs per path")
    ap.add_argument("--paths", nargs="+", choices=sorted(PATHS), default=["native", "avx2"])
    ap.add_argument("--quick", action="store_true", help="40 steps, one round, native only (smoke)")
    ap.add_argument("--threads", type=int, default=None,
                    help="OMP_NUM_THREADS for both (default: torch's, one per core); 1 keeps "
                    "ratios stable on a machine others share")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra genloop recipe override, e.g. train.lr=3e-3")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.rounds = 40, 1
        args.paths = args.paths if "--paths" in sys.argv else ["native"]
    home = Path(os.environ.get("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home")))
    base_env = {**os.environ, "GENLOOP_HOME": str(home), "NO_COLOR": "1", "TERM": "dumb",
                "COLUMNS": "100"}
    if args.threads:
        base_env["OMP_NUM_THREADS"] = str(args.threads)
    # data prepared once, before any timing: nanoGPT's prepare.py, genloop's dataset cache
    data_dir = OUT / "data-shakespeare-char"
    prepare_data(default_input(), data_dir)
    subprocess.run([sys.executable, "-c", "import genloop; genloop.prepare('tinyshakespeare')"],
                   env=base_env, check=True, stdout=subprocess.DEVNULL)

    figures: dict[str, Any] = {"steps": args.steps, "rounds": args.rounds, "overrides": args.overrides,
                               "threads": args.threads, "paths": {}}
    rows, lines = [], []
    for path in args.paths:
        env = {**base_env, **PATHS[path]}
        info = probe(env)
        base_runs, gen_runs = [], []
        for r in range(args.rounds):
            base_runs.append(run_baseline(args.steps, env, OUT / f"{path}-baseline-{r}", data_dir))
            gen_runs.append(run_genloop(args.steps, env, OUT / f"{path}-genloop-{r}.log", args.overrides))
            print(f"{path} round {r}: baseline {base_runs[-1]['tokens_per_s']:,.0f} tok/s "
                  f"{base_runs[-1]['wall_s']:.1f} s · genloop {gen_runs[-1]['tokens_per_s']:,.0f} tok/s "
                  f"{gen_runs[-1]['wall_s']:.1f} s", flush=True)
        b_tps, g_tps = median(base_runs, "tokens_per_s"), median(gen_runs, "tokens_per_s")
        b_wall, g_wall = median(base_runs, "wall_s"), median(gen_runs, "wall_s")
        b_val, g_val = median(base_runs, "val_loss"), median(gen_runs, "val_loss")
        step_x, wall_x = g_tps / b_tps, b_wall / g_wall
        figures["paths"][path] = {
            **info, "baseline": base_runs, "genloop": gen_runs,
            "baseline_tokens_per_s": b_tps, "genloop_tokens_per_s": g_tps,
            "baseline_wall_s": b_wall, "genloop_wall_s": g_wall,
            "baseline_val_loss": b_val, "genloop_val_loss": g_val,
            "step_speedup": step_x, "process_speedup": wall_x, "target": TARGETS[path],
        }
        precision = "bf16 autocast" if info["native_bf16"] else "fp32"
        rows.append([f"{path} ({info['capability']})", "nanoGPT baseline (fp32 eager)", b_tps, b_wall,
                     b_val, "1.00×", "1.00×"])
        rows.append([f"{path} ({info['capability']})", f"genloop `shakespeare-char` ({precision})", g_tps,
                     g_wall, g_val, f"{step_x:.2f}×", f"{wall_x:.2f}×"])
        met = step_x >= TARGETS[path] and wall_x >= TARGETS[path] and g_val <= b_val
        lines.append(f"**{path}: {step_x:.2f}× per step, {wall_x:.2f}× over the whole process, "
                     f"validation loss {g_val:.3f} against {b_val:.3f}** (target ≥ {TARGETS[path]}× both, "
                     f"loss ≤ the baseline's: {'met' if met else 'missed'}).")
    first = figures["paths"][args.paths[0]]
    figures["genloop"] = {"val_loss": first["genloop_val_loss"]}  # the summary table's rows
    figures["speedup"] = first["step_speedup"]
    figures["process_speedup"] = first["process_speedup"]
    md = "\n".join([
        "## Training speed: genloop against nanoGPT as it really runs (tinyshakespeare, 4×4×128, "
        "context 64, batch 12)",
        "",
        f"{args.steps} steps, character level, no dropout"
        f"{f', {args.threads} thread(s) each' if args.threads else ''}. Each run is its own process, "
        f"alone on the machine; per path the baseline and genloop alternate ({args.rounds} rounds; medians). "
        "Tokens/s: each's training steps after the first 20 (not evaluations or checkpoints); "
        "whole process: wall time from spawn to exit, measured from outside (genloop's includes "
        "compilation, its final full-split evaluation, samples, card and registration); validation "
        "loss over the whole validation split (the baseline's best-val checkpoint, scored outside "
        "its process time). Baseline: `bench/baseline_gpt.py`, nanoGPT's model.py + train.py at its "
        "small CPU setting (fp32, no compile). The `avx2` path holds PyTorch and oneDNN to AVX2 "
        "(`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`): bf16 is then not native and genloop "
        "trains in fp32, as on an AVX2-only machine.",
        "",
        table(["path", "run", "train tokens/s", "whole process (s)", "val loss", "per step",
               "whole process"], rows),
        "",
        *lines,
    ])
    save("train_speed", figures, md)
    print(md)


if __name__ == "__main__":
    main()
