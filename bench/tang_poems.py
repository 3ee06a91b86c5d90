"""Tang poems, character level: validation bits per character and sample poems from titles.

    python -m bench.tang_poems [--set train.steps=1500 ...]

Trains the built-in ``tang-poems`` recipe (traditional characters; validation characters never
seen in training map to <unk> and are scored as such), then writes five poems, each prompted by
a title and a newline, ending at the model's own end-of-poem token.
"""

from __future__ import annotations

import argparse
import os

from bench.common import ROOT, save, table

TITLES = ["春望", "秋夜", "送友人", "山居", "江上"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))
    import genloop

    result = genloop.train("tang-poems", overrides=["train.tensorboard=false", *args.overrides])
    model = genloop.load(result.model_ref)
    outputs = model.generate([t + "\n" for t in TITLES], max_new_tokens=80, temperature=0.8,
                             top_k=40, seed=args.seed)
    poems = [o.prompt + o.text for o in outputs]
    m = result.metrics
    figures = {"metrics": m, "model": result.model_ref, "poems": poems,
               "overrides": args.overrides}
    md = "\n".join([
        "## Tang poems, character level",
        "",
        "Built-in `tang-poems` recipe" + (f" with `{' '.join(args.overrides)}`" if args.overrides
                                          else "") + f"; model `{result.model_ref}`.",
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
