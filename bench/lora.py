"""Domain adaptation: full fine-tuning vs LoRA (r = 4, 8, 16) vs training from scratch.

    python -m bench.lora [--base-steps 500] [--steps 200] [--quick]

A character-level gpt (4 layers, 4 heads, 256 wide, context 128) is pretrained on ``python-docs``
(CPython's own pydoc topics: technical English), then adapted to ``tinyshakespeare`` (the base's
tokenizer encodes it: the loop does so for every fine-tune), by

    full      every weight (genloop's tuning: parent → child)
    lora-r    LoRA adapters of rank r on qkv, proj, fc (``train.lora``), the base frozen
    scratch   the same network from a fresh initialisation on tinyshakespeare

first at equal optimizer steps, then at equal wall time: each LoRA run gets the steps that fit
in the time of the full fine-tune's steps, from step times measured in one process with the
methods alternating (so the load of other processes falls on each alike); its schedule is
completed.
Figures per run: validation loss on the whole tinyshakespeare validation split (nats per
character), trainable parameters (and their share of the network's own), peak resident memory
of the run's own process (each run is a subprocess; VmHWM), the training state (weights +
gradients + AdamW moments), tokens/s (after the first 20 steps). Target: LoRA within 0.05 nats
of full at ≤ 5% trainable parameters.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.common import ROOT, save, table

HOME = ROOT / "bench" / "out" / "lora-home"
MODEL = {"family": "gpt", "preset": "small",
         "config": {"n_layer": 4, "n_head": 4, "n_embd": 256, "block_size": 128, "dropout": 0.0}}
RANKS = (4, 8, 16)
# LoRA with the embedding (tied to the head) and the norms trained whole beside the adapters
# (``train.lora.modules_to_save``): a new corpus moves a character model's letter frequencies,
# which adapters on the projections reach only indirectly
SAVED = ["wte", "ln_1", "ln_2", "ln_f"]
SAVED_RANKS = (4, 8)


def lora_section(label: str) -> dict[str, Any]:
    """``lora-8`` → rank 8; ``lora-8+e`` → rank 8 with the embedding and norms (``SAVED``)."""
    rank, _, extra = label.removeprefix("lora-").partition("+")
    return {"rank": int(rank), **({"modules_to_save": SAVED} if extra == "e" else {})}
TARGET_NATS, TARGET_SHARE = 0.05, 0.05
LORAS = [*[f"lora-{r}" for r in RANKS], *[f"lora-{r}+e" for r in SAVED_RANKS]]


def recipe(name: str, source: str, steps: int, lr: float, *, parent: str | None = None,
           lora: dict[str, Any] | None = None, batch: int = 16, threads: int = 2) -> dict[str, Any]:
    train: dict[str, Any] = {"steps": steps, "batch_size": batch, "lr": lr,
                             "warmup_steps": min(50, steps // 10), "eval_every": steps,
                             "checkpoint_every": steps, "eval_batches": 4, "log_every": 25,
                             "tensorboard": False, "threads": threads, "compile": False,
                             "precision": "fp32", "seed": 0}
    if lora is not None:
        train["lora"] = lora
    tree: dict[str, Any] = {"name": name, "data": {"source": source}, "model": MODEL, "train": train,
                            "eval": {"num_samples": 0, "full_validation": True}}
    if parent:
        tree["parent"] = parent
    return tree


def one(tree: dict[str, Any], time_limit: float | None) -> dict[str, Any]:
    """Run one recipe in this process; print its figures as JSON (the parent process reads it)."""
    import genloop

    if time_limit:
        tree["train"]["time_limit_s"] = time_limit
    result = genloop.train(tree)
    m = result.metrics
    hwm = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    total = int(m["parameters"])
    trainable = int(m.get("trainable_parameters", total))
    base = total - trainable if "trainable_parameters" in m else total  # the network's own
    return {"model": result.model_ref, "val_loss": m["val_loss"], "steps": int(m["train_steps"]),
            "wall_s": m["train_time_s"], "tokens_per_s": m["train_tokens_per_s"],
            "parameters": total, "trainable": trainable, "trainable_share": trainable / base,
            "peak_rss_mb": hwm / 2**20,
            "train_state_mb": (total + 3 * trainable) * 4 / 2**20}


def step_times(ref: str, labels: list[str], rounds: int = 5, steps: int = 8) -> dict[str, float]:
    """Seconds per optimizer step of a full fine-tune and of each LoRA rank on the base, timed
    in one process, alternating (round-robin, ``rounds`` times ``steps`` steps each) so the load
    of other processes falls on every method alike; the median round of each."""
    import statistics
    import time

    import torch

    import genloop
    from genloop.models import lora
    from genloop.training.loop import param_groups

    torch.set_num_threads(2)
    base = genloop.load(ref)
    family = base.family
    nets: dict[str, torch.nn.Module] = {}
    for label in ["full", *labels]:
        _, _, net = base.directory.load()
        if label != "full":
            section = lora.LoraSection(**lora_section(label))
            lora.inject(net, section, lora.targets_for(section, family, base.config), family)
        nets[label] = net.train()
    opts = {k: torch.optim.AdamW(param_groups(n, 0.1), lr=1e-4, fused=True) for k, n in nets.items()}
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, base.config.vocab_size, (16, base.config.block_size + 1), generator=gen)
    batch = (ids[:, :-1], ids[:, 1:])
    times: dict[str, list[float]] = {k: [] for k in nets}
    for r in range(rounds + 1):  # the first round warms up
        for label, net in nets.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                family.loss(net, batch)["loss"].backward()
                opts[label].step()
                opts[label].zero_grad(set_to_none=True)
            if r:
                times[label].append((time.perf_counter() - t0) / steps)
    return {k: statistics.median(v) for k, v in times.items()}


def run(tree: dict[str, Any], time_limit: float | None = None) -> dict[str, Any]:
    env = {**os.environ, "GENLOOP_HOME": str(HOME), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "bench.lora", "--one", json.dumps(tree)]
    if time_limit:
        cmd += ["--time-limit", str(time_limit)]
    figures = _child(cmd, env, tree["name"])
    print(f"  {tree['name']}: {json.dumps(figures)}", flush=True)
    return figures


def timed(ref: str) -> dict[str, float]:
    env = {**os.environ, "GENLOOP_HOME": str(HOME), "HF_HUB_OFFLINE": "1"}
    times = _child([sys.executable, "-m", "bench.lora", "--times", ref], env, "timing")
    print(f"  seconds per step: {json.dumps(times)}", flush=True)
    return times


def _child(cmd: list[str], env: dict[str, str], what: str) -> Any:
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--base-steps", type=int, default=500)
    ap.add_argument("--steps", type=int, default=200, help="fine-tuning steps (equal steps)")
    ap.add_argument("--lr-base", type=float, default=2e-3)
    ap.add_argument("--lr-full", type=float, default=1e-3)
    ap.add_argument("--lr-lora", type=float, default=4e-3)
    ap.add_argument("--quick", action="store_true", help="tiny run to check the script")
    ap.add_argument("--reuse", action="store_true", help="keep the pretrained base of a former run")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--times", help=argparse.SUPPRESS)
    ap.add_argument("--time-limit", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(json.loads(args.one), args.time_limit)))
        return
    if args.times:
        print(json.dumps(step_times(args.times, LORAS)))
        return
    if args.quick:
        args.base_steps, args.steps = 30, 20
    saved = HOME / "base.json"
    if args.reuse and saved.is_file() and json.loads(saved.read_text())["steps"] == args.base_steps:
        base = json.loads(saved.read_text())
        print(f"reusing the base {base['model']}", flush=True)
    else:
        shutil.rmtree(HOME, ignore_errors=True)
        print("pretraining the base on python-docs", flush=True)
        base = run(recipe("docs", "python-docs", args.base_steps, args.lr_base))
        saved.write_text(json.dumps(base))
    os.environ["GENLOOP_HOME"] = str(HOME)
    ref = base["model"]

    def tuned(label: str, steps: int, limit: float | None = None) -> dict[str, Any]:
        if label == "full":
            tree = recipe(f"full-{steps}", "tinyshakespeare", steps, args.lr_full, parent=ref)
        elif label == "scratch":
            tree = recipe(f"scratch-{steps}", "tinyshakespeare", steps, args.lr_base)
        else:
            tag = label.removeprefix("lora-").replace("+", "")
            tree = recipe(f"lora{tag}-{steps}", "tinyshakespeare", steps, args.lr_lora,
                          parent=ref, lora=lora_section(label))
        return {"method": label, **run(tree, limit)}

    methods = ["full", *LORAS, "scratch"]
    print(f"equal steps ({args.steps})", flush=True)
    steps_rows = [tuned(m, args.steps) for m in methods]
    full = steps_rows[0]
    print("timing a step of each method, alternating", flush=True)
    times = timed(ref)
    times["scratch"] = times["full"]  # the same network, every weight trained
    budget = args.steps * times["full"]
    print(f"equal wall time ({budget:.1f} s of steps: the full fine-tune's {args.steps})", flush=True)
    wall_rows = [{**full, "step_s": times["full"]}]
    for row in steps_rows[1:]:
        fit = max(1, round(args.steps * times["full"] / times[row["method"]]))
        if fit == row["steps"]:
            wall_rows.append({**row, "step_s": times[row["method"]]})
        else:
            wall_rows.append({**tuned(row["method"], fit), "step_s": times[row["method"]]})

    def gap(row: dict[str, Any], ref_row: dict[str, Any]) -> float:
        return row["val_loss"] - ref_row["val_loss"]

    def rows(data: list[dict[str, Any]]) -> list[list[Any]]:
        return [[r["method"], r["steps"], r["val_loss"],
                 "—" if r["method"] in ("full", "scratch") else f"{gap(r, data[0]):+.3f}",
                 f"{r['trainable']:,}", f"{100 * r['trainable_share']:.2f}%", r["peak_rss_mb"],
                 r["train_state_mb"], r["tokens_per_s"], r["wall_s"]] for r in data]

    headers = ["method", "steps", "val loss (nats/char)", "vs full", "trainable params", "share",
               "peak RSS (MB)", "train state (MB)", "tokens/s", "run wall (s)"]
    verdicts = []
    for label, data in (("equal steps", steps_rows), ("equal wall time", wall_rows)):
        for r in data:
            if r["method"].startswith("lora"):
                met = gap(r, data[0]) <= TARGET_NATS and r["trainable_share"] <= TARGET_SHARE
                verdicts.append({"setting": label, "method": r["method"], "gap": gap(r, data[0]),
                                 "share": r["trainable_share"], "met": met})
    met_any = [v for v in verdicts if v["met"]]
    figures = {"base": base, "equal_steps": steps_rows, "equal_wall": wall_rows,
               "verdicts": verdicts, "target_met": bool(met_any), "step_s": times,
               "settings": {"base_steps": args.base_steps, "steps": args.steps,
                            "lr_base": args.lr_base, "lr_full": args.lr_full,
                            "lr_lora": args.lr_lora, "model": MODEL, "batch": 16}}
    verdict_lines = [f"- {v['setting']}, {v['method']}: {v['gap']:+.3f} nats vs full at "
                     f"{100 * v['share']:.2f}% of the parameters: "
                     + ("**met**" if v["met"] else "missed") for v in verdicts]
    md = "\n".join([
        "## LoRA: domain adaptation, python-docs → tinyshakespeare",
        "",
        f"A character-level gpt (4 layers, 4 heads, 256 wide, context 128; "
        f"{base['parameters']:,} parameters) pretrained {args.base_steps} steps on `python-docs` "
        f"(validation loss {base['val_loss']:.3f} nats/char there), then adapted to "
        f"`tinyshakespeare` with the base's tokenizer: every weight (`full`, lr {args.lr_full:g}), "
        f"LoRA adapters on qkv, proj and fc (`lora-r`, alpha 2r, lr {args.lr_lora:g}, the base "
        f"frozen; `lora-r+e`: the same with the embedding, tied to the head, and the norms "
        f"({', '.join(SAVED)}) trained whole beside them, `train.lora.modules_to_save`), or the "
        f"same network from scratch (lr {args.lr_base:g}). Batch 16 × 128 "
        "characters, fp32, 2 threads, validation loss over the whole tinyshakespeare validation "
        "split. Each run is its own process: peak RSS is its VmHWM (the runtime, data and "
        "evaluation included); train state = weights + gradients + AdamW's two moments of what "
        "trains. A LoRA run's peak RSS is higher although its train state is a third of full's: "
        "importing peft (and transformers with it) alone raises a process's peak by about 160 MB "
        "(224 → 389 MB for `import torch` → `import torch, peft`). Other processes shared the two "
        "cores: tokens/s and run wall times are noisy.",
        "",
        f"### Equal steps ({args.steps})",
        "",
        table(headers, rows(steps_rows)),
        "",
        f"### Equal wall time ({budget:.1f} s of optimizer steps: the full fine-tune's {args.steps})",
        "",
        "Each run gets the steps its own step time fits into that time (its schedule completed). "
        "Step times were measured in one process, the methods alternating round-robin (median "
        "of 5 rounds of 8 steps, batch 16 × 128), so other processes' load fell on each alike: "
        + ", ".join(f"{k} {1000 * v:.0f} ms" for k, v in times.items() if k != "scratch")
        + "; scratch trains the full network, so its step is full's. The runs' own tokens/s and "
        "wall times in the tables were taken while other processes shared the cores.",
        "",
        table(headers, rows(wall_rows)),
        "",
        f"Target: LoRA within {TARGET_NATS} nats of full fine-tuning at ≤ {100 * TARGET_SHARE:.0f}% "
        "of the trainable parameters:",
        "",
        *verdict_lines,
    ])
    save("lora", figures, md)
    print(md)


if __name__ == "__main__":
    main()
