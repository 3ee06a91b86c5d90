"""seq2seq against gpt on the same pairs, at equal wall time.

    python -m bench.seq2seq [--quick] [--seconds S] [--data SOURCE --prompt-field F
                             --completion-field F] [--name RESULT] [--set key=value ...]

Trains the built-in recipes ``tang-titles-seq2seq`` (encoder–decoder: the title is the source)
and ``tang-titles-gpt`` (decoder-only: the title is the prompt) on the same pairs dataset (one
data section, so one dataset hash, one tokenizer, one train/validation split), each for the same
wall time (``train.time_limit_s``), the same batch size, learning rate and context. Both
families' losses count the completion tokens only (the ``pairs`` objective), so the figures are:

- validation loss per completion token (nats) and per completion character (bits), from the
  loop's final evaluation (``evaluation/pairs.py``) on the same validation records;
- training speed: optimizer steps and records per second in that time (the loop's own tokens/s
  counts batch × context, the same for both);
- decoding speed: completion tokens per second through ``TextModel.generate`` on held-out
  prompts (sampling, temperature 0.8, top-k 40), and seq2seq's beam search (4 beams).

``--data`` takes any pairs source (a built-in name or a .jsonl of records) with its field names,
so another task (triples → text on the built-in world) runs the same comparison; ``--name``
names its result. torch.compile is off for both (it would start only for gpt, and its start-up
would count in the time).
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import yaml

from bench.common import ROOT, save, table

FAMILIES = {"seq2seq": "tang-titles-seq2seq", "gpt": "tang-titles-gpt"}


def _recipe(name: str, data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    from genloop.training.recipe import builtin_recipes

    recipe = yaml.safe_load(builtin_recipes()[name].read_text(encoding="utf-8"))
    recipe["name"] = f"bench-{name}"
    recipe["data"] = data
    steps = 400 if args.quick else 20_000  # an upper bound: the time limit ends the run
    recipe["train"].update(steps=steps, time_limit_s=args.seconds, compile=False, tensorboard=False,
                           warmup_steps=20 if args.quick else 100, seed=args.seed,
                           eval_every=50 if args.quick else 250, eval_batches=5 if args.quick else 20,
                           checkpoint_every=steps)
    recipe["eval"] = {"kind": "pairs", "max_records": args.eval_records}
    return recipe


def _decode(model: Any, prompts: list[str], seed: int, **settings: Any) -> dict[str, float]:
    t0 = time.perf_counter()
    outs = model.generate(prompts, max_new_tokens=64, seed=seed, **settings)
    wall = time.perf_counter() - t0
    tokens = sum(o.tokens for o in outs)
    return {"tokens": tokens, "seconds": wall, "tokens_per_s": tokens / wall,
            "first": (outs[0].prompt + " → " + outs[0].text).replace("\n", " / ")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="120 s per model, 300 validation records")
    ap.add_argument("--seconds", type=float, default=None, help="training wall time per model")
    ap.add_argument("--data", default="tang-poems", help="a pairs source: built-in name or .jsonl")
    ap.add_argument("--prompt-field", default=None, help="default: title for tang-poems, else prompt")
    ap.add_argument("--completion-field", default=None,
                    help="default: paragraphs for tang-poems, else completion")
    ap.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    ap.add_argument("--eval-records", type=int, default=None, help="validation records scored")
    ap.add_argument("--decode-prompts", type=int, default=None)
    ap.add_argument("--name", default="seq2seq", help="the result's name (bench/results/NAME.md)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="recipe override for both models (e.g. model.config.block_size=128)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.seconds = args.seconds or (120.0 if args.quick else 900.0)
    args.eval_records = args.eval_records or (300 if args.quick else None)
    args.decode_prompts = args.decode_prompts or (16 if args.quick else 64)
    os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "home"))
    import genloop
    from genloop.data.pairs import PairsDataConfig

    tang = args.data == "tang-poems"
    data = {"kind": "pairs", "source": args.data, "tokenizer": args.tokenizer,
            "prompt_field": args.prompt_field or ("title" if tang else "prompt"),
            "completion_field": args.completion_field or ("paragraphs" if tang else "completion")}
    dataset = PairsDataConfig.model_validate(data).prepare()
    tok = dataset.tokenizer
    val_prompts = dataset.val.fields["prompt"]
    prompts = [tok.decode(val_prompts[i].tolist()) for i in range(min(args.decode_prompts,
                                                                        len(dataset.val)))]
    results: dict[str, Any] = {}
    for family, recipe_name in FAMILIES.items():
        recipe = _recipe(recipe_name, data, args)
        result = genloop.train(genloop.load_recipe(recipe, args.overrides))
        m = result.metrics
        model = genloop.load(result.model_ref)
        batch = recipe["train"]["batch_size"]
        row: dict[str, Any] = {
            "model": result.model_ref, "parameters": m["parameters"], "steps": m["train_steps"],
            "train_s": m["train_time_s"], "val_loss": m["val_loss"],
            "bits_per_char": m["completion_bits_per_char"], "val_records": m["val_records"],
            "steps_per_s": m["train_steps"] / m["train_time_s"],
            "records_per_s": m["train_steps"] * batch / m["train_time_s"],
            "loop_tokens_per_s": m["train_tokens_per_s"],
            "sampling": _decode(model, prompts, args.seed, temperature=0.8, top_k=40),
        }
        if model.family.beam_search is not None:
            row["beams"] = _decode(model, prompts[:8], args.seed, num_beams=4)
        results[family] = row
        print(family, row, flush=True)
    s, g = results["seq2seq"], results["gpt"]
    rows = [[f, r["parameters"], r["steps"], r["train_s"], r["val_loss"], r["bits_per_char"],
             r["records_per_s"], r["sampling"]["tokens_per_s"],
             r["beams"]["tokens_per_s"] if "beams" in r else "—"] for f, r in results.items()]
    md = "\n".join([
        f"## seq2seq against gpt on the same pairs ({args.data})",
        "",
        f"`tang-titles-seq2seq` and `tang-titles-gpt` models on the pairs of `{args.data}` "
        f"({data['prompt_field']} → {data['completion_field']}, {args.tokenizer} tokens, "
        f"dataset `{dataset.hash[:12]}`: {len(dataset.train)} train / {len(dataset.val)} "
        f"validation records), {args.seconds:.0f} s of training each"
        + (f", overrides `{' '.join(args.overrides)}`" if args.overrides else "")
        + f"; validation on {int(s['val_records'])} records, completion tokens only.",
        "",
        table(["family", "parameters", "steps", "train (s)", "val nats/token", "bits/char",
               "train records/s", "sampling tokens/s", "beam-4 tokens/s"], rows),
        "",
        f"seq2seq − gpt validation loss: {s['val_loss'] - g['val_loss']:+.3f} nats per completion "
        f"token; training records/s ×{s['records_per_s'] / g['records_per_s']:.2f}; sampling "
        f"tokens/s ×{s['sampling']['tokens_per_s'] / g['sampling']['tokens_per_s']:.2f}. "
        f"Decoding: {len(prompts)} held-out prompts, 64 new tokens at most, temperature 0.8, "
        "top-k 40 (beam search: the first 8, 4 beams).",
        "",
        "First held-out prompt:",
        "",
        *[f"- {f}: `{r['sampling']['first']}`" for f, r in results.items()],
        *([f"- seq2seq, 4 beams: `{s['beams']['first']}`"] if "beams" in s else []),
    ])
    save(args.name, {"results": results, "data": data, "seconds": args.seconds,
                     "dataset": dataset.hash, "overrides": args.overrides, "quick": args.quick}, md)
    print(md)


if __name__ == "__main__":
    main()
