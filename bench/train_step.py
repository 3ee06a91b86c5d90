"""What each training-step choice buys: tokens/s of one training step, variant by variant.

    python -m bench.train_step [--rounds 3] [--steps 60]

The 4×4×128 GPT, context 64, batch 12, random token batches (speed does not depend on the data).
All variants are built first, then timed round-robin (``--rounds`` × ``--steps`` steps each, after
warm-up and compilation), so machine noise falls on every variant alike; the median round counts.
Each row adds one choice to the row above it; the first row is the nanoGPT baseline
(``bench/baseline_gpt.py``'s model and optimizer, as its train.py runs them on a CPU).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from bench.baseline_gpt import GPT as BaselineGPT
from bench.baseline_gpt import GPTConfig as BaselineConfig
from bench.common import save, table
from genloop.models.registry import get_family
from genloop.training.loop import param_groups

B, T, V = 12, 64, 67


def baseline_step() -> Callable[[torch.Tensor, torch.Tensor], None]:
    torch.manual_seed(0)
    model = BaselineGPT(BaselineConfig(vocab_size=V, block_size=T))
    opt = model.configure_optimizers(0.1, 1e-3, (0.9, 0.99))

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        loss.item()  # train.py logs every iteration at the small CPU setting (log_interval=1)

    return step


def genloop_step(*, fused: bool, bf16: bool, compile: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    family = get_family("gpt")
    torch.manual_seed(0)
    model = family.build(family.make_config("small", vocab_size=V))
    opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-3, betas=(0.9, 0.99),
                            fused=fused, foreach=None if fused else True)

    def objective(batch):
        return family.loss(model, batch)

    if compile:
        objective = torch.compile(objective)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = objective((x, y))["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


VARIANTS = [
    ("nanoGPT baseline (bench/baseline_gpt.py: no biases, exact GELU, fp32, CPU AdamW)", baseline_step),
    ("genloop GPT, fp32 eager, foreach AdamW (no biases, tanh GELU)",
     lambda: genloop_step(fused=False, bf16=False, compile=False)),
    ("+ fused AdamW", lambda: genloop_step(fused=True, bf16=False, compile=False)),
    ("+ bf16 autocast, attention kept in fp32", lambda: genloop_step(fused=True, bf16=True, compile=False)),
    ("+ torch.compile of the whole objective (genloop's default for long runs; GELU as x·σ(2u))",
     lambda: genloop_step(fused=True, bf16=True, compile=True)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=60)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g))
               for _ in range(8)]
    steps, setup_s = [], []
    for _, make in VARIANTS:
        t = time.perf_counter()
        step = make()
        for i in range(10):  # warm-up, and compilation for the compiled variant
            step(*batches[i % 8])
        setup_s.append(time.perf_counter() - t)
        steps.append(step)
    speeds: list[list[float]] = [[] for _ in VARIANTS]
    for _ in range(args.rounds):
        for k, step in enumerate(steps):
            t = time.perf_counter()
            for i in range(args.steps):
                step(*batches[i % 8])
            speeds[k].append(args.steps * B * T / (time.perf_counter() - t))
    med = [statistics.median(s) for s in speeds]
    rows = [[name, med[k], min(speeds[k]), max(speeds[k]), f"{med[k] / med[0]:.2f}×", setup_s[k]]
            for k, (name, _) in enumerate(VARIANTS)]
    figures = {"rounds": args.rounds, "steps": args.steps,
               "variants": [{"name": n, "tokens_per_s": speeds[k], "median": med[k],
                             "setup_s": setup_s[k]} for k, (n, _) in enumerate(VARIANTS)]}
    md = "\n".join([
        "## What each training-step choice buys",
        "",
        f"4×4×128 GPT, context 64, batch 12; {args.rounds} round-robin rounds of {args.steps} steps "
        "per variant in one process (median, min, max tokens/s). Each row adds one choice.",
        "",
        table(["variant", "tokens/s (median)", "min", "max", "vs baseline", "setup + warm-up (s)"],
              rows),
        "",
        "Why attention stays in fp32: profiled under bf16 autocast, the CPU's bf16 flash-attention "
        "backward took 39% of the step (4.6 ms per call against 1.2 ms in fp32), erasing what the "
        "bf16 matmuls gain (1.7–3.4× faster than fp32 at these shapes with AVX-512 BF16). "
        "Threads: torch's default (one per core) — one thread was about 1.3× slower. "
        "GELU: inside the compiled graph genloop writes its tanh-approximated GELU as x·σ(2u), "
        "the same function; inductor's vectorised CPU tanh made the GELU forward and backward "
        "kernels a fifth of the step (1.6 ms each per layer at one thread), about 1.1× per step.",
    ])
    save("train_step", figures, md)
    print(md)


if __name__ == "__main__":
    main()
