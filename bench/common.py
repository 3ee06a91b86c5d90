"""Shared plumbing of the benchmarks: machine facts, result files, the BENCHMARKS.md report.

Each benchmark writes ``bench/results/<name>.json`` (every figure, the command, machine, date)
and ``bench/results/<name>.md`` (its section of BENCHMARKS.md); ``write_report`` joins the
sections under the intro, so BENCHMARKS.md is always regenerated from measured results.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ORDER = ["train_speed", "train_step", "time_to_quality", "sweep", "ablation", "kv_cache", "quickstart",
         "tang_poems", "loop", "loop_shakespeare_brevity", "images", "image_speed", "serving", "soak",
         "inference", "lora", "dpo_trl",
         "embeddings", "fewshot", "seq2seq", "moderation", "provenance", "grounding", "t2i"]


# the CPU paths a speed benchmark runs on: this CPU's own kernels, and PyTorch and oneDNN held to
# AVX2 (bf16 then not native, so genloop's auto precision trains in fp32, as on an AVX2-only CPU)
PATHS = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def probe(env: dict[str, str]) -> dict[str, Any]:
    """What PyTorch sees under ``env``: its kernel capability and whether bf16 is native."""
    code = ("import json, torch; from genloop.models.family import fast_bf16; "
            "print(json.dumps({'capability': torch.backends.cpu.get_cpu_capability(), "
            "'native_bf16': fast_bf16()}))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


# the CPU flags that decide genloop's precision and kernel paths, named with every figure
FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def machine() -> dict[str, Any]:
    cpu, flags = "unknown", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                present = set(line.split(":", 1)[1].split())
                flags = [f for f in FLAGS if f in present]
    except OSError:
        pass
    return {
        "cpu": cpu, "cores": os.cpu_count(), "flags": flags,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(),
    }


def command() -> str:
    return "python -m bench." + Path(sys.argv[0]).stem + " " + shlex.join(sys.argv[1:])


def save(name: str, figures: dict[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"command": command().strip(), "machine": machine(),
            "date": dt.date.today().isoformat()}
    (RESULTS / f"{name}.json").write_text(json.dumps({**meta, **figures}, indent=2) + "\n")
    m = meta["machine"]
    header = (f"_Command:_ `{meta['command']}` · _machine:_ {m['cpu']}, {m['cores']} cores, "
              f"flags {' '.join(m['flags']) or 'none of ' + ' '.join(FLAGS)}, "
              f"torch {m['torch']} · _date:_ {meta['date']}\n\n")
    (RESULTS / f"{name}.md").write_text(markdown.split("\n", 1)[0] + "\n\n" + header
                                        + markdown.split("\n", 1)[1].lstrip("\n"))
    write_report()


TARGETS = [  # (result, label, path into its JSON, target, higher is better)
    ("train_speed", "tinyshakespeare 2000 steps: validation loss", ("genloop", "val_loss"), 1.80, False),
    ("train_speed", "bf16 CPU: training tokens/s vs nanoGPT's train.py, each alone",
     ("paths", "native", "step_speedup"), 1.5, True),
    ("train_speed", "bf16 CPU: whole process vs nanoGPT's train.py",
     ("paths", "native", "process_speedup"), 1.5, True),
    ("train_speed", "AVX2-only path: training tokens/s vs nanoGPT's train.py",
     ("paths", "avx2", "step_speedup"), 1.3, True),
    ("train_speed", "AVX2-only path: whole process vs nanoGPT's train.py",
     ("paths", "avx2", "process_speedup"), 1.3, True),
    ("time_to_quality", "time to the nanoGPT baseline's 12,000-step loss / its wall time", ("ratio",), 0.5,
     False),
    ("time_to_quality", "best validation loss in the baseline's 12,000-step wall time",
     ("genloop", "metrics", "val_loss"), 1.45, False),
    ("time_to_quality", "tang-poems: bits per character in the same budget (unknown characters counted)",
     ("tang", "metrics", "bits_per_char"), 6.0, False),
    ("kv_cache", "cost of 1,000th cached token / 10th", ("cached_growth",), 1.5, False),
    ("kv_cache", "1,000 tokens: KV cache speed-up over recomputing", ("speedup",), 5.0, True),
    ("tang_poems", "Tang poems: validation bits per character", ("metrics", "bits_per_char"), None, False),
    ("loop", "loop over HTTP, 200 held-out titles: well-formed share after tuning",
     ("headline", "well_formed"), 0.90, True),
    ("loop", "loop: well-formed share before tuning (the parent)", ("headline", "parent_well_formed"),
     None, True),
    ("loop", "loop: win rate of the tuned child over its parent (ties apart)", ("headline", "win_rate"),
     0.80, True),
    ("loop", "loop: validation bits per character, child − parent", ("headline", "bits_per_char_delta"),
     0.10, False),
    ("images", "MNIST conditional diffusion (guidance 2): samples of the requested digit",
     ("diffusion", "metrics", "sample_accuracy"), 0.97, True),
    ("images", "MNIST conditional diffusion (guidance 3): samples of the requested digit",
     ("guidance3", "metrics", "sample_accuracy"), 0.97, True),
    ("images", "MNIST diffusion FID / best GAN FID (below every GAN row)", ("diffusion_fid_over_best_gan",),
     1.0, False),
    ("images", "MNIST conditional GAN (hinge, 1,500 steps): samples of the requested digit",
     ("gan-hinge", "metrics", "sample_accuracy"), 0.90, True),
    ("images", "MNIST conditional GAN (hinge, 3,000 steps): samples of the requested digit",
     ("gan-hinge-3000", "metrics", "sample_accuracy"), 0.90, True),
    ("images", "MNIST VAE: importance-weighted test NLL (nats)", ("vae", "metrics", "test_iw_nll_nats"),
     95.0, False),
    ("images", "Fashion-MNIST diffusion: FID", ("fashion", "metrics", "fid"), None, False),
    ("image_speed", "8 concurrent image requests over HTTP: images/s vs one request's",
     ("headline", "serving_ratio"), 3.0, True),
    ("image_speed", "DPM-Solver++(2M) 20 steps: FID over DDIM-50's", ("headline", "dpm20_fid_over_ddim50"),
     1.1, False),
    ("image_speed", "DPM-Solver++(2M) 10 steps: FID over DDIM-50's", ("headline", "dpm10_fid_over_ddim50"),
     None, False),
    ("serving", "1 streaming HTTP client: tokens/s vs the bare in-process decoding loop",
     ("share_of_bare_1",), 0.85, True),
    ("serving", "8 streaming HTTP clients: tokens/s vs 1 client", ("speedup_8",), 4.0, True),
    ("serving", "4× capacity: answers other than 200, 429, 503", ("overload_unexpected_statuses",), 0, False),
    ("soak", "soak, 64 clients × 2 min: failures (5xx, drops, stream errors)", ("failure_count",), 0, False),
    ("soak", "soak: /health p99 latency (ms)", ("health_p99_ms",), 500, False),
    ("soak", "soak: server memory growth after the first minute", ("rss_growth_after_60s",), 0.05, False),
    ("grounding", "held-out descriptions with retrieval: supported claims",
     ("descriptions", "with", "supported_share"), 0.95, True),
    ("grounding", "held-out descriptions: hallucination without / with retrieval",
     ("descriptions", "hallucination_ratio"), 5.0, True),
    ("grounding", "held-out QA with retrieval: exact match", ("qa", "with", "exact_match"), 0.90, True),
    ("grounding", "held-out QA with retrieval: unanswerable → \"I don't know.\"",
     ("qa", "with", "idk_share"), 0.90, True),
    ("grounding", "held-out support dialogues (openai client): task success",
     ("dialogue", "with", "task_success"), None, True),
    ("moderation", "moderation rules: recall on blocked items", ("rules", "all", "recall"), None, True),
    ("inference", "long gpt, batch 1: int8 (onnxruntime) tokens/s vs fp32", ("results", "int8", "speedup_b1"),
     1.5, True),
    ("inference", "long gpt, batch 8: int8 (onnxruntime) tokens/s vs fp32", ("results", "int8", "speedup_b8"),
     1.5, True),
    ("inference", "long gpt: int8 bits/char − fp32", ("results", "int8", "bits_per_char_delta"), 0.02, False),
    ("inference", "imported (hf) model, batch 1: int8 tokens/s vs fp32",
     ("imported", "results", "int8", "speedup_b1"), 1.5, True),
    ("inference", "imported (hf) model, batch 8: int8 tokens/s vs fp32",
     ("imported", "results", "int8", "speedup_b8"), 1.5, True),
    # verdicts[4]: equal steps, lora-8+e (bench/lora.py LORAS order)
    ("lora", "LoRA r=8 + embedding: nats above full fine-tuning, equal steps", ("verdicts", 4, "gap"),
     0.05, False),
    ("lora", "LoRA r=8 + embedding: share of parameters trained", ("verdicts", 4, "share"), 0.05, False),
    ("dpo_trl", "genloop dpo vs TRL DPOTrainer: largest per-step loss difference",
     ("comparison", "max_abs_loss_diff"), 0.001, False),
    ("embeddings", "imported MiniLM via /v1/embeddings vs sentence-transformers: min cosine", ("cosine_min",),
     0.9999, True),
    ("t2i", "shapes text → image: faithfulness on seen compositions", ("headline", "single_seen"), 0.95,
     True),
    ("t2i", "shapes text → image: faithfulness on held-out compositions", ("headline", "single_heldout"),
     0.85, True),
    ("t2i", "shapes-pairs text → image: faithfulness on held-out compositions", ("headline", "pairs_heldout"),
     0.70, True),
    ("t2i", "shapes recogniser: whole-image accuracy on real test images", ("headline", "single_recogniser"),
     0.99, True),
    ("t2i", "shapes-pairs recogniser: whole-image accuracy on real test images",
     ("headline", "pairs_recogniser"), 0.99, True),
    ("t2i", "shapes captioner: exact caption accuracy on held-out images",
     ("headline", "caption_single_heldout"), 0.95, True),
    ("t2i", "shapes-pairs captioner: exact caption accuracy on held-out images",
     ("headline", "caption_pairs_heldout"), 0.85, True),
    ("t2i", "shapes captioner: CIDEr (6 references per image)", ("headline", "caption_single_cider"), None,
     True),
    ("t2i", "shapes round trip: caption(generate(prompt)) = prompt", ("headline", "round_trip_single"), None,
     True),
    ("fewshot", "few-shot letter→digit task, tiny gpt: accuracy at k = 8 (chance 0.1)", ("accuracy", "8"),
     None, True),
]


def summary() -> str:
    rows = []
    for name, label, path, target, higher in TARGETS:
        f = RESULTS / f"{name}.json"
        if not f.exists():
            continue
        value: Any = json.loads(f.read_text())
        try:
            for key in path:
                value = value[key]
        except (KeyError, TypeError):  # a partial run: that row is not measured yet
            continue
        if value is None:  # a figure that was never reached (a curve that never crossed)
            rows.append([label, "never", "—" if target is None else ("≥ " if higher else "≤ ")
                         + f"{target:g}", "**missed**", f"[{name}](#{name})"])
            continue
        if target is None:
            verdict, goal = "reported", "—"
        else:
            met = value >= target if higher else value <= target
            verdict = "met" if met else "**missed**"
            goal = ("≥ " if higher else "≤ ") + f"{target:g}"
        rows.append([label, f"{value:.3f}", goal, verdict, f"[{name}](#{name})"])
    return "## Summary\n\n" + table(["figure", "measured", "target", "", "section"], rows) + "\n"


def write_report() -> None:
    intro = (ROOT / "bench" / "INTRO.md").read_text()
    parts = [intro.rstrip() + "\n", summary()]
    names = ORDER + sorted(p.stem for p in RESULTS.glob("*.md") if p.stem not in ORDER)
    for name in names:
        path = RESULTS / f"{name}.md"
        if path.exists():
            parts.append(f'<a id="{name}"></a>\n\n' + path.read_text().rstrip() + "\n")
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)
