"""Image speed: batched image serving, the U-Net's speed choices, few-step sampling quality.

    python -m bench.image_speed [--quick] [--seconds 20] [--rounds 2] [--steps 20]
                                [--eval-images 500] [--no-compile]

The model is the built-in ``mnist-diffusion`` recipe (class-conditional U-Net, MNIST), trained
once into ``bench/out/image-speed-home`` and reused (``--quick``: a 150-step tiny one in
``bench/out/image-speed-quick``, results not written).

1. Serving, through the real server process: ``genloop serve`` (its default ``--threads 1``)
   with the model preloaded; clients are threads of this process posting
   ``POST /v1/images/generations`` (n = 1, DDIM ``--steps``, guidance 2, a class each) back to
   back. One client, then 8 concurrent clients, alternating for ``--rounds`` rounds of
   ``--seconds``; images/s counts the images answered inside each window. The 8 share sampling
   runs through the model's image batcher (``generation/image_batching.py``). Target ≥ 3×.
2. The U-Net's speed choices, in this process with one torch thread (the cores are shared),
   alternating in short rounds: training images/s (batch 64: loss, backward, AdamW) and
   sampling images/s (a guided DDIM step on 16 images = a U-Net pass over 32 rows) for fp32,
   bf16 autocast (genloop's default where the CPU has native bf16, before and after this
   change), bf16 + channels-last input, bf16 + a channels-last model, and ``torch.compile``
   (bf16; its compile time reported; ``--no-compile`` skips it).
3. Few-step sampling quality: the model's own evaluation (FID/KID/precision/recall under the
   dataset's classifier, sample accuracy) for DDIM-50 against DPM-Solver++(2M) at 10 and 20
   steps, and DDIM at 10 and 20, on ``--eval-images`` samples each (same seed and classes).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from statistics import median
from typing import Any

import httpx

from bench.common import ROOT, save, table
from bench.serving import Server

BIN = Path(sys.executable).parent
QUALITY = [("ddim", 50), ("dpmpp_2m", 10), ("dpmpp_2m", 20), ("ddim", 10), ("ddim", 20)]
GUIDANCE = 2.0


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GENLOOP_DB_URL", "GENLOOP_CACHE")}
    env.update(GENLOOP_HOME=str(home), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def diffusion_model(home: Path, quick: bool, train_steps: int | None = None) -> str:
    """The newest mnist-diffusion version in ``home``, trained now when there is none."""
    from genloop.store import Store

    name = "image-speed-quick" if quick else "image-speed-mnist"

    def find() -> str | None:
        with Store() as store:
            versions = [v for v in store.list_models() if v.name == name]
        return max(versions, key=lambda v: v.version).ref if versions else None

    ref = find()
    if ref is None:
        sets = [f"name={name}", "train.tensorboard=false"]
        if quick:
            sets += ["model.preset=tiny", "train.steps=150", "train.eval_every=150", "train.ema_decay=0.9",
                     "train.warmup_steps=20", "eval.num_samples=20", "eval.extractor_steps=100",
                     "eval.grid=0"]
        elif train_steps:  # a shorter run than the recipe's: a shorter EMA, a smaller final evaluation
            sets += [f"train.steps={train_steps}", "train.ema_decay=0.99", "train.eval_every=100000",
                     "eval.num_samples=200"]
        print(f"training mnist-diffusion into {home} ({' '.join(sets)}) ...", flush=True)
        subprocess.run([str(BIN / "genloop"), "train", "mnist-diffusion",
                        *[a for s in sets for a in ("--set", s)]], env=env_for(home), check=True)
        ref = find()
        assert ref is not None, "training finished but registered no model"
    return ref


# --- 1. serving -----------------------------------------------------------------------------------


def load_window(url: str, ref: str, clients: int, seconds: float, steps: int, seed0: int) -> dict[str, Any]:
    """``clients`` threads posting one-image requests back to back for ``seconds``."""
    stop_at = time.perf_counter() + seconds
    done: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client(i: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            k = 0
            while time.perf_counter() < stop_at:
                body = {"model": ref, "n": 1, "seed": seed0 + 1000 * i + k, "steps": steps,
                        "sampler": "ddim", "guidance_scale": GUIDANCE, "class": str((i + k) % 10),
                        "response_format": "url"}
                r = c.post("/v1/images/generations", json=body)
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                    if r.status_code == 200 and time.perf_counter() <= stop_at:
                        done.append(time.perf_counter())
                k += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    window = min(seconds, time.perf_counter() - t0)
    return {"clients": clients, "images": len(done), "images_per_s": len(done) / window,
            "statuses": statuses, "drain_s": time.perf_counter() - t0 - seconds}


def serving(home: Path, ref: str, seconds: float, rounds: int, steps: int, clients: int,
            threads: int = 1) -> dict[str, Any]:
    server = Server(home, ref, "image-speed", "--no-auth", "--rate-limit", "0", "--threads", str(threads))
    try:
        load_window(server.url, ref, 1, 3, steps, 0)  # warm: load, first run, first PNGs
        rows: dict[int, list[dict[str, Any]]] = {1: [], clients: []}
        for r in range(rounds):
            for n in (1, clients):
                rows[n].append(load_window(server.url, ref, n, seconds, steps, 10_000 * (r + 1) + n))
                print(f"  serving round {r + 1}: {n} client(s) {rows[n][-1]['images_per_s']:.2f} img/s",
                      flush=True)
    finally:
        server.stop()
    one = sum(w["images"] for w in rows[1]) / (seconds * rounds)
    many = sum(w["images"] for w in rows[clients]) / (seconds * rounds)
    return {"steps": steps, "clients": clients, "seconds": seconds, "rounds": rounds,
            "one_images_per_s": one, "many_images_per_s": many, "ratio": many / max(one, 1e-9),
            "per_round": rows, "threads": threads,
            "through": f"genloop serve --threads {threads} (HTTP, its own process)"}


# --- 2. the U-Net's speed choices -----------------------------------------------------------------


def unet_choices(rounds: int, compile_too: bool, quick: bool) -> dict[str, Any]:
    import torch

    from genloop.models.family import ImageBatch, fast_bf16
    from genloop.models.registry import FAMILIES

    torch.set_num_threads(1)
    fam = FAMILIES["diffusion"]
    config = fam.make_config("tiny" if quick else "small", image_size=28, channels=1,
                             num_classes=10, conditional=True)
    cl = torch.channels_last
    choices = {  # name: (bf16, channels-last input, channels-last model, compiled)
        "fp32": (False, False, False, False),
        "bf16 (default)": (True, False, False, False),
        "bf16 + channels-last input": (True, True, False, False),
        "bf16 + channels-last model": (True, True, True, False),
        **({"bf16 + torch.compile": (True, False, False, True)} if compile_too else {}),
    }
    g = torch.Generator().manual_seed(0)
    x0, y = torch.rand(64, 1, 28, 28, generator=g) * 2 - 1, torch.randint(0, 10, (64,), generator=g)
    xs, ys = torch.randn(32, 1, 28, 28, generator=g), torch.randint(0, 10, (32,), generator=g)
    ts = torch.full((32,), 500)
    nets, opts, calls, compile_s = {}, {}, {}, {}
    for name, (_bf16, _cli, clm, comp) in choices.items():
        torch.manual_seed(0)
        net = fam.build(config)
        if clm:
            net = net.to(memory_format=cl)
        nets[name], opts[name] = net, torch.optim.AdamW(net.parameters(), 1e-3)
        calls[name] = torch.compile(net) if comp else net

    def train(name: str) -> None:
        bf16, cli, _, _ = choices[name]
        x = x0.contiguous(memory_format=cl) if cli else x0
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = fam.loss(calls[name], ImageBatch(images=x, labels=y,
                                                    generator=torch.Generator().manual_seed(0)))["loss"]
        opts[name].zero_grad()
        loss.backward()
        opts[name].step()

    def sample(name: str) -> None:
        bf16, cli, _, _ = choices[name]
        x = xs.contiguous(memory_format=cl) if cli else xs
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            calls[name](x, ts, ys)

    for name in choices:  # warm up (and compile: timed)
        t0 = time.perf_counter()
        train(name), train(name), sample(name), sample(name)
        compile_s[name] = time.perf_counter() - t0
    per: dict[str, dict[str, list[float]]] = {n: {"train": [], "sample": []} for n in choices}
    span = 1.0 if quick else 3.0
    for _ in range(rounds):
        for name in choices:
            for what, fn, images in (("train", train, 64), ("sample", sample, 16)):
                t0, n = time.perf_counter(), 0
                while time.perf_counter() - t0 < span:
                    fn(name)
                    n += 1
                per[name][what].append(images * n / (time.perf_counter() - t0))
    base = per["bf16 (default)"]
    rows = {name: {"train_images_per_s": median(v["train"]), "sample_images_per_s": median(v["sample"]),
                   "train_rounds": v["train"], "sample_rounds": v["sample"],
                   "warmup_s": compile_s[name],
                   "train_vs_default": median(v["train"]) / median(base["train"]),
                   "sample_vs_default": median(v["sample"]) / median(base["sample"])}
            for name, v in per.items()}
    return {"preset": "tiny" if quick else "small", "native_bf16": fast_bf16("cpu"),
            "rounds": rounds, "round_s": span, "choices": rows}


# --- 3. few-step quality --------------------------------------------------------------------------


def quality(ref: str, images: int) -> list[dict[str, Any]]:
    from genloop.evaluation.run import evaluate_version

    rows = []
    for sampler, steps in QUALITY:
        t0 = time.perf_counter()
        m = evaluate_version(ref, num_samples=images, seed=0, steps=steps, sampler=sampler,
                             guidance_scale=GUIDANCE, grid=0)
        rows.append({"sampler": sampler, "steps": steps, "seconds": time.perf_counter() - t0, **m})
        print(f"  {sampler}-{steps}: FID {m.get('fid', float('nan')):.3f} "
              f"acc {m.get('sample_accuracy', float('nan')):.3f}", flush=True)
    return rows


# --- the report -----------------------------------------------------------------------------------


def report(fig: dict[str, Any]) -> str:
    s, u, q = fig["serving"], fig["unet"], fig["quality"]
    base = q[0]
    lines = [
        "## Images: batched serving, U-Net speed, few-step sampling",
        "",
        f"Model: `{fig['model']}` (the built-in `mnist-diffusion` recipe). Run alone on the machine "
        "for the figures to mean what they say.",
        "",
        "### Batched image requests (genloop serve over HTTP, in its own process)",
        "",
        f"One-image requests (DDIM {s['steps']} steps, guidance {GUIDANCE}), back to back, "
        f"{s['rounds']} alternating rounds of {s['seconds']:.0f} s, for each `genloop serve --threads` "
        "setting in turn; concurrent requests to the model share its sampling runs.",
        "",
        table(["server threads", "clients", "images/s", "per round", "vs 1 client"],
              [row for t in fig.get("serving_all", [s]) for row in (
                  [t.get("threads", 1), 1, t["one_images_per_s"],
                   ", ".join(f"{w['images_per_s']:.2f}" for w in t["per_round"]["1"]), "1.00×"],
                  [t.get("threads", 1), t["clients"], t["many_images_per_s"],
                   ", ".join(f"{w['images_per_s']:.2f}" for w in t["per_round"][str(t["clients"])]),
                   f"{t['ratio']:.2f}×"])]),
        "",
        f"**{s['clients']} concurrent requests: {s['ratio']:.2f}× one request's images/s with "
        f"`--threads {s.get('threads', 1)}`** (target ≥ 3×).",
        "",
        "### The U-Net's speed choices",
        "",
        f"`diffusion` preset `{u['preset']}` at 28×28, one torch thread, median of {u['rounds']} "
        f"alternating rounds of {u['round_s']:.0f} s each (native bf16: {u['native_bf16']}). Training: "
        "batch 64, loss + backward + AdamW. Sampling: one guided step on 16 images (32 U-Net rows). "
        "Warm-up: the first two training and sampling calls (the compile time, for torch.compile).",
        "",
        table(["choice", "train img/s", "× default", "sample img-steps/s", "× default", "warm-up (s)"],
              [[n, r["train_images_per_s"], r["train_vs_default"], r["sample_images_per_s"],
                r["sample_vs_default"], r["warmup_s"]] for n, r in u["choices"].items()]),
        "",
        "The default stays what it was: bf16 autocast where the CPU has native bf16 (fp32 elsewhere), "
        "contiguous tensors, no compile. Channels-last does not pay for this U-Net on CPU; "
        "torch.compile speeds sampling steps but costs its compile time on each new batch shape, "
        "which the batcher's changing batch sizes would pay again and again.",
        "",
        "### Few-step sampling: DPM-Solver++(2M) against DDIM-50",
        "",
        f"The model's own evaluation on {base.get('eval_images', 0):.0f} samples per row (same seed, "
        f"classes in turn, guidance {GUIDANCE}), FID under the dataset's classifier.",
        "",
        table(["sampler", "steps", "FID", "KID", "precision", "recall", "sample acc.", "seconds"],
              [[r["sampler"], r["steps"], r.get("fid"), r.get("kid"), r.get("precision"),
                r.get("recall"), r.get("sample_accuracy"), r["seconds"]] for r in q]),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tiny model, short rounds; nothing written")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of the served requests")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--eval-images", type=int, default=500)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    ap.add_argument("--server-threads", default="1",
                    help="genloop serve --threads for the serving rounds; a list (1,2) serves each in turn")
    ap.add_argument("--train-steps", type=int, default=None,
                    help="train the model this many steps (EMA 0.99) instead of the recipe's 2000")
    args = ap.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.eval_images, args.no_compile = 4.0, 1, 20, True
    home = ROOT / "bench" / "out" / ("image-speed-quick" if args.quick else "image-speed-home")
    os.environ["GENLOOP_HOME"] = str(home)
    shared = ROOT.parent / "shared" / "data"
    if shared.is_dir():
        os.environ.setdefault("GENLOOP_DATA_MIRROR", str(shared))
    ref = diffusion_model(home, args.quick, args.train_steps)
    print(f"model {ref}; serving ...", flush=True)
    fig: dict[str, Any] = {"model": ref}
    fig["serving_all"] = []
    for threads in [int(t) for t in args.server_threads.split(",")]:
        s = serving(home, ref, args.seconds, args.rounds, args.steps, args.clients, threads)
        s["per_round"] = {str(k): v for k, v in s["per_round"].items()}
        fig["serving_all"].append(s)
    fig["serving"] = max(fig["serving_all"], key=lambda s: s["ratio"])
    print("U-Net choices ...", flush=True)
    fig["unet"] = unet_choices(max(args.rounds, 2) if not args.quick else 1, not args.no_compile,
                               args.quick)
    print("few-step quality ...", flush=True)
    fig["quality"] = quality(ref, args.eval_images)
    base = fig["quality"][0]
    for r in fig["quality"]:
        r["fid_over_ddim50"] = (r.get("fid") or 0) / max(base.get("fid") or 1e-9, 1e-9)
    fig["headline"] = {
        "serving_ratio": fig["serving"]["ratio"],
        "dpm20_fid_over_ddim50": fig["quality"][2]["fid_over_ddim50"],
        "dpm10_fid_over_ddim50": fig["quality"][1]["fid_over_ddim50"],
        "dpm20_sample_accuracy": fig["quality"][2].get("sample_accuracy"),
        "ddim50_sample_accuracy": base.get("sample_accuracy"),
    }
    text = report(fig)
    if args.quick:
        print(text)
        return
    save("image_speed", fig, text)
    print(text)


if __name__ == "__main__":
    main()
