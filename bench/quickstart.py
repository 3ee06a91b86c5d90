"""The README's quickstart, as a newcomer runs it, on each kind of CPU this project meets.

    python -m bench.quickstart [--runs 2] [--paths native avx2]

Each run is ``genloop quickstart`` (the real command) in a fresh workspace: a small GPT on the
Python docs, then the class-conditional diffusion model of the 8×8 digits, each evaluated and
registered. Reported per run: wall time of the whole command, each model's training time, the
GPT's validation loss and the digits model's FID and sample accuracy, and a hash of each
registered model's weights (the same hash twice = the same result run to run).

CPU paths. Machines of this kind are either AVX-512 with native bf16 (genloop's ``auto``
precision then trains and samples in bf16) or older AVX2-only ones (fp32). ``avx2`` runs the
same command with PyTorch's kernels held to AVX2 (``ATEN_CPU_CAPABILITY=avx2``) and oneDNN to
AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2``, which also makes bf16 non-native), so the precision path and
the kernels are an AVX2-only machine's — on this machine's cores, so its times are this CPU's
clock, not an older CPU's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench.common import PATHS, RESULTS, ROOT, probe, save, table

GENLOOP = Path(sys.executable).parent / "genloop"


def weights_hash(path: Path) -> str:
    return hashlib.sha256((path / "weights.safetensors").read_bytes()).hexdigest()[:16]


def one_run(path: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="genloop-quickstart-") as tmp:
        env = {**os.environ, **PATHS[path], "GENLOOP_HOME": str(Path(tmp) / "home"),
               "NO_COLOR": "1", "TERM": "dumb"}
        info = probe(env)
        t0 = time.perf_counter()
        subprocess.run([str(GENLOOP), "quickstart"], cwd=tmp, env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        os.environ["GENLOOP_HOME"] = env["GENLOOP_HOME"]
        from genloop.store import Store

        store = Store()
        text, digits = store.resolve("python-docs@1"), store.resolve("digits@1")
        return {
            "path": path, **info, "wall_s": wall,
            "text_train_s": text.metrics["train_time_s"], "text_val_loss": text.metrics["val_loss"],
            "digits_train_s": digits.metrics["train_time_s"], "fid": digits.metrics["fid"],
            "sample_accuracy": digits.metrics["sample_accuracy"],
            "text_weights": weights_hash(Path(text.path)), "digits_weights": weights_hash(Path(digits.path)),
        }


def report(runs: list[dict[str, object]], per_path: int) -> None:
    """The BENCHMARKS.md section and JSON of measured ``runs``."""
    paths = list(dict.fromkeys(str(r["path"]) for r in runs))
    rows = [[r["path"], r["capability"], "yes" if r["native_bf16"] else "no", r["wall_s"] / 60,
             r["text_train_s"] / 60, r["digits_train_s"] / 60, r["text_val_loss"], r["fid"],
             r["sample_accuracy"], r["text_weights"], r["digits_weights"]] for r in runs]

    def same(path: str, *keys: str) -> bool:
        return len({tuple(r[k] for k in keys) for r in runs if r["path"] == path}) == 1

    stable = {p: {"digits": same(p, "fid", "digits_weights"), "gpt": same(p, "text_weights")}
              for p in paths}
    lines = [
        "## The quickstart on each kind of CPU",
        "",
        "Measured by `python -m bench.quickstart` on an otherwise idle machine (`--report` "
        "rewrites this section from its JSON): "
        "`genloop quickstart` in a fresh workspace, run to the end; "
        f"{per_path} run(s) per path. `avx2`: PyTorch's and oneDNN's kernels held to AVX2 "
        "(`ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2`), so bf16 is not native and genloop's "
        "`auto` precision trains in fp32, as on an AVX2-only machine — but on this machine's cores.",
        "",
        table(["path", "kernels", "native bf16", "whole command (min)", "GPT training (min)",
               "digits training (min)", "GPT val loss", "digits FID", "sample acc.", "GPT weights",
               "digits weights"], rows),
        "",
    ]
    for p, ok in stable.items():
        digits = ("the same digits weights and FID every run" if ok["digits"]
                  else "**the digits model differed between runs**")
        gpt = ("the same GPT weights" if ok["gpt"] else
               "GPT weights that differ between runs (its 1,500 steps turn `torch.compile` on, "
               "whose CPU kernels are not run-to-run deterministic; eager runs are)")
        lines.append(f"- `{p}`: {digits}; {gpt}.")
    save("quickstart", {"runs": runs, "stable": stable}, "\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=2, help="runs per CPU path (run-to-run check)")
    ap.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    ap.add_argument("--report", action="store_true",
                    help="rewrite the section from bench/results/quickstart.json, measuring nothing")
    args = ap.parse_args()
    os.chdir(ROOT)
    if args.report:
        runs = json.loads((RESULTS / "quickstart.json").read_text())["runs"]
        report(runs, max(Counter(r["path"] for r in runs).values()))
        return
    report([one_run(p) for p in args.paths for _ in range(args.runs)], args.runs)


if __name__ == "__main__":
    main()
