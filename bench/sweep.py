"""The sweep behind the time-to-quality recipes: which shape, context, batch, learning rate,
dropout, modern GPT options (rotary positions, QK-norm, ReLU², untied head) and optimizer (Muon)
reach the lowest validation loss on tinyshakespeare (or tang-poems), character level.

    python -m bench.sweep [--data shakespeare|tang] [--steps 600 | --seconds 120] [--rounds 2]
                          [--only NAME ...] [--quick]

The two cores are usually shared while this runs, so the sweep is built to stay fair under load:

1. step cost: every config trains a few dozen steps through the real loop, the configs taking
   turns in ``--rounds`` alternating rounds (one process, one config at a time); its cost is
   the median over rounds of the loop's own timed tokens/s (steps after the first 20);
2. loss: every config then trains its whole cosine schedule, one run at a time — ``--steps``
   each (equal steps; loss does not depend on the machine's load), or ``--seconds`` of its
   measured cost (equal time) — and is scored on the whole validation split.

Every run is eager (``train.compile=false``) with ``train.threads=1``: compile speeds every config
up by a similar factor, and one thread leaves the other core to whoever shares the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

from bench.common import RESULTS, ROOT, command, save, table

BASES = {"shakespeare": "shakespeare-char", "tang": "tang-poems"}
COMMON = ["train.threads=1", "train.compile=false", "train.tensorboard=false",
          "train.checkpoint_every=1000000", "eval.num_samples=0"]


def shape(n_layer: int, n_head: int, n_embd: int, block: int, batch: int) -> list[str]:
    return [f"model.config.n_layer={n_layer}", f"model.config.n_head={n_head}",
            f"model.config.n_embd={n_embd}", f"model.config.block_size={block}",
            f"train.batch_size={batch}"]


MODERN = ["model.config.pos_emb=rope", "model.config.qk_norm=true", "model.config.mlp=relu2",
          "model.config.tie_weights=false"]
MUON = ["train.optimizer=muon", "train.muon_lr=0.02"]

# name → overrides of the base recipe; the first is the reference row
CONFIGS: dict[str, dict[str, list[str]]] = {
    "shakespeare": {
        "4x128 c128 b16 lr4e-3 (old 10-min best)": shape(4, 4, 128, 128, 16) + ["train.lr=4e-3"],
        "+ rope, qk-norm, relu2, untied": shape(4, 4, 128, 128, 16) + ["train.lr=4e-3", *MODERN],
        "+ rope, qk-norm, relu2, untied, muon": shape(4, 4, 128, 128, 16) + ["train.lr=4e-3", *MODERN, *MUON],
        "c256 b8, modern, muon": shape(4, 4, 128, 256, 8) + ["train.lr=4e-3", *MODERN, *MUON],
        "4x192 c128 b16, modern, muon": shape(4, 6, 192, 128, 16) + ["train.lr=4e-3", *MODERN, *MUON],
        "6x128 c128 b16, modern, muon": shape(6, 4, 128, 128, 16) + ["train.lr=4e-3", *MODERN, *MUON],
        "4x128 c256 b16 lr4e-3": shape(4, 4, 128, 256, 16) + ["train.lr=4e-3"],
        "4x128 c128 b16 lr6e-3": shape(4, 4, 128, 128, 16) + ["train.lr=6e-3"],
        "4x192 c128 b16 lr3e-3": shape(4, 6, 192, 128, 16) + ["train.lr=3e-3"],
        "6x128 c128 b16 lr4e-3": shape(6, 4, 128, 128, 16) + ["train.lr=4e-3"],
        "4x128 c128 b16 lr4e-3 drop0.1": shape(4, 4, 128, 128, 16)
        + ["train.lr=4e-3", "model.config.dropout=0.1"],
    },
    "tang": {
        "4x192 c96 b16 lr2e-3 (tang-poems)": [],
        "4x192 c96 b16 lr4e-3, modern, muon": ["train.lr=4e-3", *MODERN, *MUON],
        "4x192 c96 b16 lr4e-3": ["train.lr=4e-3"],
        "4x128 c96 b16 lr4e-3": shape(4, 4, 128, 96, 16) + ["train.lr=4e-3"],
        "4x256 c96 b16 lr3e-3": shape(4, 4, 256, 96, 16) + ["train.lr=3e-3"],
    },
}


def tokens_per_s(base: str, overrides: list[str], steps: int, compiled: bool = False) -> float:
    """The loop's own training tokens/s over ``steps`` steps (the first 20 are not timed)."""
    from genloop.training.loop import train

    result = train(base, overrides=[*COMMON, *overrides, f"train.steps={steps}",
                                    f"train.compile={str(compiled).lower()}",
                                    "train.eval_every=1000000", "eval.full_validation=false"],
                   register=False)
    return float(result.metrics["train_tokens_per_s"])


def tokens_per_step(base: str, overrides: list[str]) -> int:
    from genloop.training.recipe import load_recipe

    r = load_recipe(base, overrides)
    return int(r.train.batch_size * r.model.resolved().block_size * r.train.grad_accum)


def run_sweep(data: str, steps: int | None, seconds: float, rounds: int, cost_steps: int,
              only: list[str], out: dict[str, Any], compiled: bool = False) -> None:
    """Step cost in alternating rounds, then each config trained (its whole schedule) one at a
    time: ``steps`` steps each (equal steps), or ``seconds`` of its measured cost (equal time)."""
    from genloop.training.loop import train

    base = BASES[data]
    configs = {k: v for k, v in CONFIGS[data].items() if not only or any(o == k for o in only)}
    partial = ROOT / "bench" / "out" / f"sweep_{data}.partial.json"
    partial.parent.mkdir(parents=True, exist_ok=True)
    # 1. step cost in alternating rounds
    speeds: dict[str, list[float]] = out.setdefault("speeds", {name: [] for name in configs})
    for _ in range(rounds):
        for name, overrides in configs.items():
            speeds[name].append(tokens_per_s(base, overrides, cost_steps, compiled))
            partial.write_text(json.dumps(out, indent=2) + "\n")
    out.update(steps=steps, seconds=None if steps else seconds, compiled_cost=compiled)
    if steps == 0:  # step costs only
        return
    rows = out.setdefault("rows", [])
    # 2. every config its whole cosine schedule, one run at a time
    for name, overrides in configs.items():
        per_step = tokens_per_step(base, overrides)
        tok_s = statistics.median(speeds[name])
        n = steps or max(50, round(seconds * tok_s / per_step))
        t0 = time.perf_counter()
        result = train(base, overrides=[*COMMON, *overrides, f"train.steps={n}",
                                        f"train.eval_every={max(50, n // 8)}",
                                        "train.eval_batches=10"], register=False)
        m = result.metrics
        rows.append({"name": name, "overrides": overrides, "tokens_per_step": per_step,
                     "tokens_per_s_rounds": speeds[name], "tokens_per_s": tok_s,
                     "step_ms": 1000 * per_step / tok_s, "steps": n,
                     "val_loss": m["val_loss"], "bits_per_char": m["bits_per_char"],
                     "val_estimates": _curve(result.run_dir), "wall_s": time.perf_counter() - t0,
                     "parameters": m["parameters"]})
        partial.write_text(json.dumps(out, indent=2) + "\n")


def _curve(run_dir: Any) -> list[tuple[int, float]]:
    points = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "val/loss" in row:
            points.append((row["step"], row["val/loss"]))
    return points


def markdown(results: dict[str, dict[str, Any]], notes: list[str] | None = None) -> str:
    parts = ["## Sweep: the time-to-quality recipes", "",
             "Each config trains its whole cosine schedule through the real loop (one eager thread, "
             "`train.threads=1 train.compile=false`), one run at a time, at equal steps (or, with "
             "`--seconds`, in equal estimated time: steps = seconds × tokens/s ÷ tokens per step); "
             "val loss over the whole validation split. Tokens/s: the loop's own timed figure in "
             "short alternating rounds (all configs in one process, one at a time), the median "
             "shown, each round listed. Equal time = steps × step (ms). The runs are short against "
             "the real budget (7-10 minutes of two compiled threads), so configs that pay off late "
             "(larger, more regularised) are disadvantaged here; the chosen recipes run at full "
             "length in the time_to_quality section."]
    for key, out in results.items():
        data = out.get("data", key)
        rows = out.get("rows", [])
        if not rows and out.get("speeds"):  # a table of step costs only
            how = "compiled (`train.compile=true`)" if out.get("compiled_cost") else "eager"
            parts += ["", f"**{BASES[data]}: tokens/s, {how}, one thread** (alternating rounds):", "",
                      table(["config", "tokens/s (median)", "rounds"],
                            [[name, statistics.median(v), " / ".join(f"{x:,.0f}" for x in v)]
                             for name, v in out["speeds"].items() if v])]
            if out.get("command"):
                parts += ["", f"Command: `{out['command']}`."]
            continue
        if not rows:
            continue
        best = min(r["val_loss"] for r in rows)
        budget = (f"{out['steps']:,} steps a config" if out.get("steps")
                  else f"{out['seconds']:g} s of one thread a config")
        parts += ["", f"**{BASES[data]}** (base recipe `{BASES[data]}`, {budget}):", "",
                  table(["config", "params", "tokens/step", "tokens/s (rounds)", "step (ms)", "steps",
                         "val loss", "bits/char", "vs best"],
                        [[r["name"], f"{r['parameters']:,}", r["tokens_per_step"],
                          " / ".join(f"{v:,.0f}" for v in r["tokens_per_s_rounds"]), r["step_ms"],
                          r["steps"], r["val_loss"], r["bits_per_char"],
                          f"{r['val_loss'] - best:+.3f}"] for r in rows])]
        spread = [max(r["tokens_per_s_rounds"]) / min(r["tokens_per_s_rounds"]) - 1 for r in rows
                  if len(r["tokens_per_s_rounds"]) > 1]
        if spread:
            parts += ["", f"Noise: tokens/s of one config varied by up to {100 * max(spread):.0f}% "
                      "between rounds (the cores were shared with other work)."]
        if out.get("command"):
            parts += ["", f"Command: `{out['command']}`."]
        parts += ["", "Overrides of each config: "
                  + "; ".join(f"{r['name']}: `{' '.join(r['overrides']) or '-'}`" for r in rows)]
    parts += ["", *[f"- {n}" for n in notes or []]]
    return "\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", choices=sorted(BASES), action="append")
    ap.add_argument("--steps", type=int, default=600, help="equal steps per config (0: step costs only)")
    ap.add_argument("--seconds", type=float, default=None,
                    help="equal estimated time per config instead (seconds of one thread)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cost-steps", type=int, default=50)
    ap.add_argument("--tag", help="keep these results beside the dataset's others (e.g. compiled)")
    ap.add_argument("--compiled-cost", action="store_true",
                    help="time the rounds with train.compile=true (the loss runs stay eager)")
    ap.add_argument("--only", action="append", default=[], help="only the config of this name")
    ap.add_argument("--quick", action="store_true", help="two configs, 30 steps, one round; no results")
    ap.add_argument("--report", action="store_true", help="rewrite the section from bench/results/sweep.json")
    args = ap.parse_args()
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))
    if args.report:
        saved = json.loads((RESULTS / "sweep.json").read_text())
        results, notes = saved["results"], saved.get("notes", [])
        save("sweep", {"results": results, "notes": notes}, markdown(results, notes))
        return
    if args.quick:
        args.steps, args.rounds, args.cost_steps = 30, 1, 25
    datas = args.data or ["shakespeare"]
    previous = RESULTS / "sweep.json"
    results: dict[str, dict[str, Any]] = {}
    if previous.exists() and not args.quick:  # a sweep of one dataset keeps the other's rows
        results = dict(json.loads(previous.read_text()).get("results", {}))
    for data in datas:
        key = f"{data}-{args.tag}" if args.tag else data
        results[key] = {"data": data, "command": command().strip()}
        only = args.only or (list(CONFIGS[data])[:2] if args.quick else [])
        steps = None if args.seconds else args.steps
        run_sweep(data, steps, args.seconds or 0.0, args.rounds, args.cost_steps, only, results[key],
                  args.compiled_cost)
    if args.quick:  # a smoke test: BENCHMARKS.md stays as it is
        print(markdown(results), "\n(--quick: BENCHMARKS.md untouched)")
        return
    notes = json.loads(previous.read_text()).get("notes", []) if previous.exists() else []
    save("sweep", {"results": results, "notes": notes}, markdown(results, notes))
    print(markdown(results, notes))


if __name__ == "__main__":
    main()
