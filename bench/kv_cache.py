"""KV-cache generation: per-token cost as the context fills, and cached vs recomputed decoding.

    python -m bench.kv_cache [--tokens 1000] [--preset long]

The model is the ``long`` GPT preset (6 layers, 384 dims, context 1024) with its initial weights:
speed does not depend on what the weights have learned. Both runs decode the same 1,000 tokens
greedily from a one-token prompt, batch 1, fp32, in this one process.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench.common import save, table
from genloop.models.family import TokenRequest
from genloop.models.registry import get_family


def timed_tokens(family, model, request) -> list[float]:
    """Seconds spent producing each new token (the first includes the prompt's prefill)."""
    times, t = [], time.perf_counter()
    for _ in family.sample(model, request, torch.Generator().manual_seed(0)):
        now = time.perf_counter()
        times.append(now - t)
        t = now
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--preset", default="long")
    ap.add_argument("--vocab", type=int, default=65)
    args = ap.parse_args()
    family = get_family("gpt")
    config = family.make_config(args.preset, vocab_size=args.vocab)
    torch.manual_seed(0)
    model = family.build(config).eval()
    prompt = torch.zeros(1, 1, dtype=torch.long)

    def request(use_cache: bool) -> TokenRequest:
        return TokenRequest(prompt_ids=prompt, max_new_tokens=args.tokens, temperature=0,
                            use_cache=use_cache)

    timed_tokens(family, model, TokenRequest(prompt_ids=prompt, max_new_tokens=20))  # warm up
    cached = timed_tokens(family, model, request(True))
    full = timed_tokens(family, model, request(False))
    n = args.tokens

    def around(ts: list[float], i: int) -> float:  # median of 11 tokens centred on the i-th
        lo, hi = max(1, i - 6), min(len(ts), i + 5)
        return statistics.median(ts[lo:hi])

    c10, c1000 = around(cached, 10), around(cached, n - 5)
    f10, f1000 = around(full, 10), around(full, n - 5)
    figures = {
        "model": {"preset": args.preset, **config.model_dump()},
        "tokens": n,
        "cached": {"total_s": sum(cached), "tokens_per_s": n / sum(cached),
                   "token_10_ms": c10 * 1e3, "token_1000_ms": c1000 * 1e3},
        "recompute": {"total_s": sum(full), "tokens_per_s": n / sum(full),
                      "token_10_ms": f10 * 1e3, "token_1000_ms": f1000 * 1e3},
        "cached_growth": c1000 / c10,
        "speedup": sum(full) / sum(cached),
    }
    md = "\n".join([
        "## Generation with the KV cache",
        "",
        f"GPT `{args.preset}` ({config.n_layer} layers, {config.n_embd} dims, context "
        f"{config.block_size}), {n} new tokens, batch 1, fp32, greedy; token times are medians of "
        "11 tokens around the 10th and the 1,000th.",
        "",
        table(["decoding", "10th token (ms)", "1,000th token (ms)", "growth", "total (s)",
               "tokens/s"], [
            ["KV cache", c10 * 1e3, c1000 * 1e3, f"{c1000 / c10:.2f}×", sum(cached), n / sum(cached)],
            ["recompute context", f10 * 1e3, f1000 * 1e3, f"{f1000 / f10:.2f}×", sum(full),
             n / sum(full)],
        ]),
        "",
        f"**The 1,000th cached token costs {c1000 / c10:.2f}× the 10th (target ≤ 1.5×); the whole "
        f"generation is {sum(full) / sum(cached):.1f}× faster than recomputing the context "
        "(target ≥ 5×).**",
    ])
    save("kv_cache", figures, md)
    print(md)


if __name__ == "__main__":
    main()
