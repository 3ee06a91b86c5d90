"""Training speed and quality on the common small-CPU baseline, genloop vs plain PyTorch.

    python -m bench.train_speed [--steps 2000] [--set train.lr=2e-3 ...]

tinyshakespeare, character level, 4 layers / 4 heads / 128 dims, context 64, batch 12, no dropout,
the same split (first 90% train, last 10% validation) for both. The baseline is
``bench/baseline_gpt.py``: nanoGPT's model and shakespeare_char recipe in fp32 eager PyTorch.
genloop runs its built-in ``shakespeare-char`` recipe through the real training loop (the same
code as ``genloop train``). Both run in this process, in lockstep (see below).
Validation loss is over the full validation split for both.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from bench.baseline_gpt import BaselineTrainer, full_val_loss
from bench.common import ROOT, save, table

WARMUP = 20  # steps not timed (compilation, warm-up), for both


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra genloop recipe override, e.g. train.lr=3e-3")
    ap.add_argument("--sequential", action="store_true",
                    help="run the baseline after genloop instead of in lockstep with it")
    args = ap.parse_args()
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))

    import genloop
    from genloop.training.loop import train

    dataset = genloop.prepare("tinyshakespeare")
    train_ids = np.asarray(dataset.train, dtype=np.int64)
    val_ids = np.asarray(dataset.val, dtype=np.int64)
    rows, figures = [], {"steps": args.steps, "overrides": args.overrides}

    # The baseline trains in lockstep with genloop: after every 10 genloop steps (its progress
    # callback, outside genloop's step timing) the baseline takes its next 10 steps, timed here.
    # Both thus run through the same minutes of machine time, so drifting machine speed (VM
    # neighbours, thermal) falls on both alike.
    base = BaselineTrainer(train_ids, dataset.tokenizer.vocab_size, steps=args.steps)
    base_time = [0.0]

    def lockstep(p) -> None:
        if p.phase != "train":
            return
        while base.it < min(p.step, args.steps):
            t = time.perf_counter()
            base.step()
            if base.it > WARMUP:  # the same 20 untimed warm-up steps as genloop
                base_time[0] += time.perf_counter() - t

    overrides = [f"train.steps={args.steps}", "train.tensorboard=false", *args.overrides]
    result = train("shakespeare-char", overrides=overrides,
                   on_progress=None if args.sequential else lockstep)
    if args.sequential:
        for _ in range(args.steps):
            t = time.perf_counter()
            base.step()
            if base.it > WARMUP:
                base_time[0] += time.perf_counter() - t
    base_tps = (args.steps - WARMUP) * base.batch * base.block / base_time[0]
    base_val = full_val_loss(base.model, val_ids, base.block)
    figures["baseline"] = {"tokens_per_s": base_tps, "val_loss": base_val, "train_s": base_time[0]}
    rows.append(["plain PyTorch (nanoGPT, fp32 eager)", base_val, base_tps, "1.00×"])
    m = result.metrics
    recipe = genloop.load_recipe("shakespeare-char", overrides)
    figures["genloop"] = {**m, "model": result.model_ref, "recipe": recipe.frozen()}
    speedup = m["train_tokens_per_s"] / base_tps
    figures["speedup"] = speedup
    figures["mode"] = "sequential" if args.sequential else "lockstep"
    rows.append([f"genloop `shakespeare-char` ({recipe.train.precision} precision, compile "
                 f"{recipe.train.compile})", m["val_loss"], m["train_tokens_per_s"],
                 f"{speedup:.2f}×"])
    md = "\n".join([
        "## Training: tinyshakespeare, 4×4×128 GPT, context 64, batch 12",
        "",
        f"{args.steps} steps, no dropout, character level; validation loss over the whole "
        "validation split (111,540 characters). Tokens/s counts training steps after the first 20 "
        "(compilation, warm-up), not evaluations or checkpoints. The baseline trains in lockstep "
        "with genloop (10 steps each, alternately, in one process) so both see the same machine.",
        "",
        table(["run", "val loss", "train tokens/s", "speed vs baseline"], rows),
        "",
        f"**genloop: validation loss {m['val_loss']:.3f} (target ≤ 1.80), "
        f"{speedup:.2f}× the baseline's training tokens/s (target ≥ 1.5×).** "
        f"Model `{result.model_ref}`; recipe overrides: `{' '.join(args.overrides) or 'none'}`.",
    ])
    save("train_speed", figures, md)
    print(md)


if __name__ == "__main__":
    main()
