"""What each modern small-GPT option buys at equal wall time: one row per option, added alone to
the plain gpt of the built-in ``shakespeare-char`` recipe (4 layers × 4 heads × 128, context 64,
batch 12, character-level tinyshakespeare), plus one row with the options together.

    python -m bench.ablation [--seconds 120] [--quick] [--only muon rope] [--set train.muon_lr=0.04]

Equal time, with a finished schedule: each row is first run for a few steps to measure its
training tokens/s (all rows, round-robin, so machine noise falls on each alike); its real run then
gets as many steps as fit in ``--seconds`` at that speed, so every learning-rate schedule decays
to its floor (a run stopped by a time limit mid-schedule would be judged at a high learning
rate). A guard stops any run at 1.3 × ``--seconds``. The validation loss is the registered
weights' (the best in-training checkpoint's) mean cross-entropy over the whole validation split,
the loop's own final evaluation; tokens/s is the real run's, after its first 20 steps. Warmups
(sequence length, batch) last a quarter of the row's steps. ``torch.compile`` is off for every
row (``--compile`` turns it on for all): at these budgets its start-up time would dominate.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

from bench.common import ROOT, save, table

WARM = "{warm}"  # replaced by a quarter of the row's steps
# (name, what it adds to the plain gpt, as recipe overrides)
ROWS: list[tuple[str, list[str]]] = [
    ("plain", []),
    ("rope", ["model.config.pos_emb=rope"]),
    ("qk_norm", ["model.config.qk_norm=true"]),
    ("relu2", ["model.config.mlp=relu2"]),
    ("swiglu", ["model.config.mlp=swiglu"]),
    ("untied", ["model.config.tie_weights=false"]),
    ("muon", ["train.optimizer=muon"]),
    ("seq_len_warmup", [f"train.seq_len_warmup_steps={WARM}"]),
    ("batch_warmup", [f"train.batch_warmup_steps={WARM}"]),
    # shakespeare-fast's options together
    ("rope+qk_norm+relu2+untied+muon", ["model.config.pos_emb=rope", "model.config.qk_norm=true",
                                        "model.config.mlp=relu2", "model.config.tie_weights=false",
                                        "train.optimizer=muon"]),
]
RECIPE = "shakespeare-char"
TOKENS_PER_STEP = 12 * 64  # the recipe's batch × context


def quiet(steps: int) -> list[str]:
    """Overrides every run shares: no tensorboard, no samples, evaluation 8 times per run."""
    every = max(1, steps // 8)
    return ["train.tensorboard=false", "eval.num_samples=0", f"train.eval_every={every}",
            f"train.checkpoint_every={steps}", f"train.log_every={max(1, steps // 20)}"]


def run(overrides: list[str], steps: int, extra: list[str], full_validation: bool = True,
        time_limit: float | None = None) -> dict[str, Any]:
    from genloop.training.loop import train

    sets = [o.replace(WARM, str(max(1, steps // 4))) for o in overrides]
    sets += [f"train.steps={steps}", f"train.warmup_steps={min(100, max(1, steps // 10))}",
             f"eval.full_validation={str(full_validation).lower()}", *quiet(steps), *extra]
    if time_limit:
        sets.append(f"train.time_limit_s={time_limit}")
    t0 = time.perf_counter()
    result = train(RECIPE, overrides=sets, register=False)
    m = result.metrics
    return {"val_loss": m["val_loss"], "tokens_per_s": m["train_tokens_per_s"],
            "steps": m["train_steps"], "train_time_s": m["train_time_s"],
            "wall_s": time.perf_counter() - t0, "overrides": sets}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0, help="training wall time per row")
    ap.add_argument("--quick", action="store_true", help="20 s per row, short calibration")
    ap.add_argument("--only", nargs="*", default=None, help="these rows only (and plain)")
    ap.add_argument("--set", dest="extra", action="append", default=[],
                    help="an override for every row (e.g. train.threads=1)")
    ap.add_argument("--compile", action="store_true", help="torch.compile every row")
    args = ap.parse_args()
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))
    seconds = 20.0 if args.quick else args.seconds
    calib_steps = 40 if args.quick else 80
    extra = [f"train.compile={'true' if args.compile else 'false'}", *args.extra]
    rows = [r for r in ROWS if args.only is None or r[0] == "plain" or r[0] in args.only]

    # 1. each row's speed, round-robin (the first 20 steps are not timed)
    speed: dict[str, float] = {}
    for name, overrides in rows:
        speed[name] = run(overrides, calib_steps, extra, full_validation=False)["tokens_per_s"]
        print(f"calibrate {name}: {speed[name]:,.0f} tokens/s", flush=True)
    # 2. each row for the steps that fit in ``seconds`` at its speed
    results: dict[str, dict[str, Any]] = {}
    for name, overrides in rows:
        steps = max(20, int(seconds * speed[name] / TOKENS_PER_STEP))
        results[name] = run(overrides, steps, extra, time_limit=1.3 * seconds)
        r = results[name]
        print(f"{name}: {r['steps']} steps, {r['train_time_s']:.0f} s, val {r['val_loss']:.4f}, "
              f"{r['tokens_per_s']:,.0f} tokens/s", flush=True)

    plain = results["plain"]
    table_rows = [[name, " ".join(o for o in overrides) or "—", r["steps"], r["train_time_s"],
                   r["tokens_per_s"], r["tokens_per_s"] / plain["tokens_per_s"], r["val_loss"],
                   r["val_loss"] - plain["val_loss"]]
                  for (name, overrides), r in ((row, results[row[0]]) for row in rows)]
    md = "\n".join([
        "## Ablation: what each gpt option buys at equal wall time",
        "",
        f"Built-in `{RECIPE}` recipe (4×4×128, context 64, batch 12, character-level "
        f"tinyshakespeare), {seconds:.0f} s of training per row; each row adds one option to the "
        "plain gpt (the last row several). Steps per row = what fits in the time at the row's "
        "speed, measured first in short round-robin runs, so every schedule finishes; "
        f"warmups last a quarter of the steps; compile {'on' if args.compile else 'off'}"
        + (f"; every row with `{' '.join(args.extra)}`" if args.extra else "") + ". Validation "
        "loss: mean cross-entropy over the whole validation split (nats/char), of the best "
        "in-training checkpoint. One seed: differences below about 0.02 are within noise. The "
        "warmup rows' tokens/s count every step at full size (the loop's counter), so they read "
        "high.",
        "",
        table(["row", "adds", "steps", "train s", "tokens/s", "speed vs plain", "val loss",
               "Δ val loss"], table_rows),
        "",
    ])
    save("ablation", {"seconds": seconds, "compile": args.compile, "extra": args.extra,
                      "speed": speed, "results": results}, md)
    print(md)


if __name__ == "__main__":
    main()
