"""Inference speed on the CPU: fp32, bf16, int8 and onnxruntime fp32, batch 1 and batch 8.

The 10M-parameter ``long`` gpt (6 layers, 384 wide, context 1,024) trained briefly on
tinyshakespeare, so bits per character mean something; then decoded seeded from one prompt
(batch 8: eight samples of it, which share each forward pass) through each engine:

- fp32: the PyTorch network, its KV cache (``gpt.sample``);
- bf16: the same network cast to bfloat16 (attention stays fp32 on the CPU, ``gpt.attention``);
- onnx: the ONNX decoder (``hub/onnx.py``) run by onnxruntime, fp32 (``name@N:onnx``);
- int8: the same graph with int8 MatMul weights, onnxruntime's ``quantize_dynamic`` (``name@N:int8``).

Tokens/s = generated tokens / wall time of the whole request (prefill included); quality =
validation bits per character on the first ``--eval-tokens`` validation tokens, each engine on
the same windows, and its delta against fp32. Target: int8 or onnx ≥ 1.5× fp32 tokens/s with
bits/char within 0.02.

The imported rows: the same trained gpt exported as a transformers GPT-2 directory
(``hub/export.py``) and imported back (``genloop import``: family ``hf``, transformers' network),
its variants exported through ``hub/onnx_hf.py`` and quantized with MatMul and Gemm weights int8;
bits/char on the same validation text written out as a .txt (``--text``, as an imported model
has no dataset of its own). ``--no-imported`` skips them.

    GENLOOP_DATA_MIRROR=/work/shared/data nice -n 5 python -m bench.inference --steps 150
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from typing import Any

import torch

from bench.common import save, table

TARGET_SPEEDUP, TARGET_DELTA = 1.5, 0.02


def train_long(steps: int, batch: int, seconds: float | None, preset: str = "long") -> str:
    from genloop.training.loop import train

    recipe = {
        "name": "bench-long",
        "data": {"source": "tinyshakespeare"},
        "model": {"family": "gpt", "preset": preset},
        "train": {"steps": steps, "batch_size": batch, "lr": 1e-3, "warmup_steps": min(20, steps // 5),
                  "eval_every": steps, "eval_batches": 2, "checkpoint_every": steps,
                  "log_every": max(1, steps // 10), "tensorboard": False, "compile": False,
                  **({"time_limit_s": seconds} if seconds else {})},
        "eval": {"num_samples": 0, "full_validation": False},
    }
    ref = train(recipe).model_ref
    assert ref is not None
    return ref


def speed(family: Any, network: Any, tokenizer: Any, batch: int, tokens: int, repeats: int) -> float:
    from genloop.generation.text import TextRequest, generate_texts

    request = TextRequest(prompt="ROMEO:", max_new_tokens=tokens, temperature=1.0, seed=1,
                          num_samples=batch)
    generate_texts(family, network, tokenizer, request.model_copy(update={"max_new_tokens": 4}))
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        outs = generate_texts(family, network, tokenizer, request)
        best = max(best, sum(o.tokens for o in outs) / (time.perf_counter() - t0))
    return best


def run_engines(ref: str, store: Any, ids: Any, args: Any, text: Any = None
                ) -> tuple[dict[str, dict[str, Any]], dict[str, Any], Any]:
    """fp32, bf16, onnx and int8 of version ``ref``: bits/char on ``ids`` and tokens/s at
    batch 1 and 8 (the variants built first, their quality measured on ``text`` when given)."""
    from genloop.generation import service
    from genloop.hub.onnx import bits_per_char, make_variant

    metas = {v: make_variant(ref, v, store, eval_tokens=args.eval_tokens, text=text)
             for v in ("onnx", "int8")}
    fp32 = service.load(ref, store)
    block = fp32.network.config.block_size
    bf16_net = copy.deepcopy(fp32.network).to(torch.bfloat16).eval()
    engines: dict[str, tuple[Any, Any]] = {"fp32": (fp32.family, fp32.network),
                                           "bf16": (fp32.family, bf16_net)}
    for v in ("onnx", "int8"):
        m = service.load(f"{ref}:{v}", store)
        engines[v] = (m.family, m.network)
    results: dict[str, dict[str, Any]] = {}
    with torch.no_grad():
        for name, (family, network) in engines.items():
            bpc = bits_per_char(lambda x, n=network: n(x).float(), ids, block, fp32.tokenizer)
            results[name] = {"bits_per_char": bpc,
                             **{f"tokens_per_s_b{b}": speed(family, network, fp32.tokenizer, b,
                                                            args.tokens, args.repeats)
                                for b in (1, 8)}}
    for r in results.values():
        r["bits_per_char_delta"] = r["bits_per_char"] - results["fp32"]["bits_per_char"]
        for b in (1, 8):
            r[f"speedup_b{b}"] = r[f"tokens_per_s_b{b}"] / results["fp32"][f"tokens_per_s_b{b}"]
    return results, metas, fp32


def rows_of(results: dict[str, dict[str, Any]]) -> list[list[str]]:
    return [[name, f"{r['tokens_per_s_b1']:.1f}", f"{r['speedup_b1']:.2f}×",
             f"{r['tokens_per_s_b8']:.1f}", f"{r['speedup_b8']:.2f}×", f"{r['bits_per_char']:.4f}",
             f"{r['bits_per_char_delta']:+.4f}"] for name, r in results.items()]


def best_of(results: dict[str, dict[str, Any]]) -> tuple[float, str, int]:
    fits = [(results[v][f"speedup_b{b}"], v, b) for v in ("onnx", "int8") for b in (1, 8)
            if abs(results[v]["bits_per_char_delta"]) <= TARGET_DELTA]
    return max(fits) if fits else (0.0, "none within the bits/char target", 0)


def imported(ref: str, store: Any, ids: Any, tokenizer: Any, args: Any
             ) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any], str]:
    """``ref`` exported as GPT-2 and imported back; its engines on ``ids`` written out as text."""
    from pathlib import Path

    from genloop.hub.export import export_hf
    from genloop.hub.imports import import_model
    from genloop.hub.onnx import text_ids

    scratch = Path(tempfile.mkdtemp(prefix="genloop-bench-hf-"))
    out = export_hf(ref, scratch / "hf", store)
    version = import_model(out, "bench-long-hf", store)
    text = scratch / "validation.txt"
    text.write_text(tokenizer.decode([int(i) for i in ids]), encoding="utf-8")
    hf_ids = text_ids(service_tokenizer(version.ref, store), text, tokens=args.eval_tokens)
    results, metas, _ = run_engines(version.ref, store, hf_ids, args, text=text)
    return version.ref, results, metas, str(text)


def service_tokenizer(ref: str, store: Any) -> Any:
    from genloop.generation import service

    return service.load(ref, store).tokenizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--tokens", type=int, default=128, help="new tokens per request")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--eval-tokens", type=int, default=8192)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--preset", default="long", help="gpt preset (tiny: a quick check of the script)")
    p.add_argument("--no-imported", action="store_true", help="skip the imported (hf) rows")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("GENLOOP_HOME", tempfile.mkdtemp(prefix="genloop-bench-inference-"))

    from genloop.hub.onnx import validation_ids
    from genloop.store import Store

    t0 = time.perf_counter()
    ref = train_long(args.steps, args.batch_size, args.max_seconds, args.preset)
    train_s = time.perf_counter() - t0
    store = Store()
    ids = validation_ids(store.resolve(ref), store, args.eval_tokens)
    assert ids is not None
    results, metas, fp32 = run_engines(ref, store, ids, args)
    block = fp32.network.config.block_size
    best = best_of(results)
    met = best[0] >= TARGET_SPEEDUP
    params = sum(p.numel() for p in fp32.network.parameters())
    rows = rows_of(results)
    md = (
        "## Inference speed: fp32, bf16, int8, onnxruntime\n\n"
        f"The `{args.preset}` gpt ({params / 1e6:.1f}M parameters, context {block}) after {args.steps} "
        f"training steps of {args.batch_size} × {block} tokens on tinyshakespeare "
        f"({train_s:.0f} s); {args.tokens} new tokens per request from `ROMEO:`, seeded, temperature "
        f"1, best of {args.repeats}; {args.threads} threads (torch and onnxruntime). Bits/char on "
        f"the first {len(ids) - 1:,} validation tokens, every engine on the same windows.\n\n"
        + table(["engine", "batch 1 tok/s", "vs fp32", "batch 8 tok/s", "vs fp32", "bits/char",
                 "Δ vs fp32"], rows)
        + f"\n\nTarget int8 or onnx ≥ {TARGET_SPEEDUP}× fp32 tokens/s with bits/char within "
          f"{TARGET_DELTA}: **{'met' if met else 'missed'}** (best: {best[1]} at batch {best[2]}, "
          f"{best[0]:.2f}×). int8: onnxruntime `quantize_dynamic`, MatMul weights int8 per "
          "channel, activations dynamic (the VNNI / AMX int8 kernels where the CPU has them).\n"
    )
    extra: dict[str, Any] = {}
    if not args.no_imported:
        hf_ref, hf_results, hf_metas, text = imported(ref, store, ids, fp32.tokenizer, args)
        hf_best = best_of(hf_results)
        md += (
            f"\n### An imported model: `{hf_ref}`\n\nThe same network exported as a transformers "
            "GPT-2 directory and imported back (family `hf`: transformers computes it); its "
            "variants exported through transformers' forward (`hub/onnx_hf.py`), int8 on MatMul "
            f"and Gemm weights; bits/char on the same {len(ids) - 1:,} validation characters as a "
            "text (`--text`).\n\n"
            + table(["engine", "batch 1 tok/s", "vs fp32", "batch 8 tok/s", "vs fp32",
                     "bits/char", "Δ vs fp32"], rows_of(hf_results))
            + f"\n\nTarget: **{'met' if hf_best[0] >= TARGET_SPEEDUP else 'missed'}** (best: "
              f"{hf_best[1]} at batch {hf_best[2]}, {hf_best[0]:.2f}×).\n")
        extra = {"imported": {"model": hf_ref, "text": text, "results": hf_results,
                              "variants": {v: m["quality"] for v, m in hf_metas.items()},
                              "best_speedup": hf_best[0],
                              "best": {"engine": hf_best[1], "batch": hf_best[2]},
                              "target_met": hf_best[0] >= TARGET_SPEEDUP}}
    load = os.getloadavg()
    md += (f"\nLoad average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min) "
           f"on {os.cpu_count()} cores: figures taken beside other work are not speed figures.\n")
    save("inference", {"load_average": list(load), "model": ref, "parameters": params,
                       "train_steps": args.steps,
                       "train_s": train_s, "tokens": args.tokens, "threads": args.threads,
                       "eval_tokens": len(ids) - 1, "results": results,
                       "variants": {v: m["quality"] for v, m in metas.items()},
                       "best_speedup": best[0], "best": {"engine": best[1], "batch": best[2]},
                       "target_met": met, "preset": args.preset, **extra}, md)
    print(md)


if __name__ == "__main__":
    main()
