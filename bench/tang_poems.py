"""Tang poems, character level: validation bits per character and sample poems from titles.

    python -m bench.tang_poems [--recipe tang-poems] [--set train.steps=1500 ...]

Trains a built-in recipe (``tang-poems``; ``tang-poems-fast`` is the time-to-quality one, measured
in the baseline's budget by bench/time_to_quality.py), then writes five poems, each prompted by a
title and a newline, ending at the model's own end-of-poem token. Bits per character: the total
validation cross-entropy over every character of the validation poems (titles, line breaks and
each poem's end token included), in bits; characters never seen in training (traditional
characters: the report counts them) are ``<unk>`` tokens, each counted as one character
and scored by the model's probability of ``<unk>``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bench.common import ROOT, save, table

TITLES = ["春望", "秋夜", "送友人", "山居", "江上"]


def unknown_in_val(run_dir: Path) -> int:
    """Validation tokens that are ``<unk>``: characters the training split never shows."""
    import numpy as np

    from genloop.training.recipe import load_recipe

    dataset = load_recipe(run_dir / "recipe.yaml").data.prepare()  # cached: the run's own folder
    unk = dataset.tokenizer.unk_id
    return 0 if unk is None else int((np.asarray(dataset.val) == unk).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--recipe", default="tang-poems")
    args = ap.parse_args()
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))
    import genloop

    result = genloop.train(args.recipe, overrides=["train.tensorboard=false", *args.overrides])
    model = genloop.load(result.model_ref)
    outputs = model.generate([t + "\n" for t in TITLES], max_new_tokens=80, temperature=0.8,
                             top_k=40, seed=args.seed)
    poems = [o.prompt + o.text for o in outputs]
    m = result.metrics
    m["unknown_in_val"] = unknown_in_val(result.run_dir)
    figures = {"metrics": m, "model": result.model_ref, "poems": poems, "recipe": args.recipe,
               "overrides": args.overrides}
    md = "\n".join([
        "## Tang poems, character level",
        "",
        f"Built-in `{args.recipe}` recipe" + (f" with `{' '.join(args.overrides)}`" if args.overrides
                                          else "") + f"; model `{result.model_ref}`.",
        "",
        f"Bits per character over every validation character; {m['unknown_in_val']:,} of them "
        "never occur in training and are scored as `<unk>`.",
        "",
        table(["val loss (nats/char)", "bits/char", "perplexity", "train steps", "wall (s)"],
              [[m["val_loss"], m["bits_per_char"], m["perplexity"], m["train_steps"],
                m["train_time_s"]]]),
        "",
        f"Five poems, prompted by a title (seed {args.seed}, temperature 0.8, top-k 40):",
        "",
        *[f"```text\n{p.strip()}\n```\n" for p in poems],
    ])
    save("tang_poems", figures, md)
    print(md)


if __name__ == "__main__":
    main()
