"""Training speed and quality on the common small-CPU baseline, genloop vs plain PyTorch.

    python -m bench.train_speed [--steps 2000] [--set train.lr=2e-3 ...]

tinyshakespeare, character level, 4 layers / 4 heads / 128 dims, context 64, batch 12, no dropout,
the same split (first 90% train, last 10% validation) for both. The baseline is
``bench/baseline_gpt.py``: nanoGPT's model and shakespeare_char recipe in fp32 eager PyTorch.
genloop runs its built-in ``shakespeare-char`` recipe through the real training loop (the same
code as ``genloop train``). Both run in this process, one after the other.
Validation loss is over the full validation split for both.
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from bench.baseline_gpt import train_baseline
from bench.common import ROOT, save, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra genloop recipe override, e.g. train.lr=3e-3")
    ap.add_argument("--skip-baseline", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))

    import genloop
    from genloop.training.loop import train

    dataset = genloop.prepare("tinyshakespeare")
    train_ids = np.asarray(dataset.train, dtype=np.int64)
    val_ids = np.asarray(dataset.val, dtype=np.int64)
    rows, figures = [], {"steps": args.steps, "overrides": args.overrides}

    if not args.skip_baseline:
        base = train_baseline(train_ids, val_ids, dataset.tokenizer.vocab_size, steps=args.steps)
        figures["baseline"] = base
        rows.append(["plain PyTorch (nanoGPT, fp32 eager)", base["val_loss"], base["tokens_per_s"],
                     base["train_s"], "1.00×"])

    overrides = [f"train.steps={args.steps}", "train.tensorboard=false", *args.overrides]
    result = train("shakespeare-char", overrides=overrides)
    m = result.metrics
    recipe = genloop.load_recipe("shakespeare-char", overrides)
    figures["genloop"] = {**m, "model": result.model_ref, "recipe": recipe.frozen()}
    speedup = (m["train_tokens_per_s"] / figures["baseline"]["tokens_per_s"]
               if "baseline" in figures else float("nan"))
    figures["speedup"] = speedup
    rows.append([f"genloop `shakespeare-char` ({recipe.train.precision} precision)", m["val_loss"],
                 m["train_tokens_per_s"], m["train_time_s"], f"{speedup:.2f}×"])
    md = "\n".join([
        "## Training: tinyshakespeare, 4×4×128 GPT, context 64, batch 12",
        "",
        f"{args.steps} steps, no dropout, character level; validation loss over the whole "
        "validation split (111,540 characters). Tokens/s counts training steps only (genloop's "
        "wall time also includes its periodic evaluations and checkpoints).",
        "",
        table(["run", "val loss", "train tokens/s", "wall (s)", "speed vs baseline"], rows),
        "",
        f"**genloop: validation loss {m['val_loss']:.3f} (target ≤ 1.80), "
        f"{speedup:.2f}× the baseline's training tokens/s (target ≥ 1.5×).** "
        f"Model `{result.model_ref}`; recipe overrides: `{' '.join(args.overrides) or 'none'}`.",
    ])
    save("train_speed", figures, md)
    print(md)


if __name__ == "__main__":
    main()
