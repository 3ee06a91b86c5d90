"""DPO against the reference implementation: TRL's ``DPOTrainer`` and genloop's ``dpo`` objective
on the same preference pairs, from the same model, at equal settings.

    python -m bench.dpo_trl                     # parent trained here, ~4 minutes on 2 cores
    python -m bench.dpo_trl --parent NAME@N     # reuse a trained char-level gpt

1. A parent: a small char-level gpt trained briefly on tinyshakespeare (context 128).
2. Preference pairs as ``bench/loop.py`` makes them: the parent writes ``--samples`` completions
   of speaker cues from the training split (fixed seeds); the ``shakespeare-brevity`` rater of
   ``bench/raters.py`` prefers, per cue, the better of every two completions it grades apart.
   Only pairs whose prompt + completion + end-of-text fit the context are kept, so neither side
   truncates (genloop cuts the prompt's start, TRL the completion's end).
3. genloop: the pairs as a ``preferences`` JSONL, tuned on the one loop (``dpo`` objective, the
   parent frozen as the reference).
4. TRL: the parent exported with ``genloop export --format hf`` (``hub.export.export_hf``), the
   reference a second copy of it; the training rows are the very records genloop drew, in its
   batch order (genloop's batch of step s is a pure function of the seed and s), fed sequentially;
   TRL's own tokenization of them is checked to give genloop's token ids exactly.

Equal settings: the same trainable parameters (GPT-2's biases, zero in the export since gpt has
none, are frozen in TRL's copy); β, lr, batch, steps; AdamW (fused) with β = (0.9, 0.99), ε 1e-8, no weight
decay; constant lr, no warmup; gradient clipping at 1.0; fp32; no dropout; one thread each. The
curves: loss and reward accuracy per step (both log every step), and seconds per step (genloop:
from its logged throughput, evaluation excluded; TRL: a callback's step times).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, save, table

os.environ.setdefault("GENLOOP_HOME", str(ROOT / "bench" / "out" / "dpo_trl"))
os.environ.setdefault("GENLOOP_DATA_MIRROR", "/work/shared/data")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TOLERANCE = {"loss": 1e-3, "reward_accuracy_window": 0.05}  # per step; over windows of 10 steps
WINDOW = 10


def parent_recipe(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "name": "dpo-trl-parent",
        "data": {"source": "tinyshakespeare"},
        "model": {"family": "gpt", "preset": "small", "config": {"block_size": args.block}},
        "train": {"steps": args.parent_steps, "batch_size": 16, "lr": 1e-3, "warmup_steps": 20,
                  "eval_every": args.parent_steps, "eval_batches": 4,
                  "checkpoint_every": args.parent_steps, "log_every": 50, "tensorboard": False,
                  "threads": args.threads, "precision": "fp32", "compile": False},
        "eval": {"num_samples": 1, "sample_tokens": 32, "full_validation": False},
    }


def preference_pairs(parent: str, args: argparse.Namespace) -> tuple[list[dict[str, str]], dict[str, Any]]:
    """``bench/loop.py``'s pairs from the parent's completions, those that fit the context."""
    import genloop
    from bench.loop import _shakespeare_prompts, records
    from bench.raters import RATERS

    model = genloop.load(parent)
    rater = RATERS["shakespeare-brevity"]()
    prompts, _ = _shakespeare_prompts(args.prompts, 1, args.seed)
    outs = model.generate(prompts, num_samples=args.samples, max_new_tokens=args.max_tokens,
                          temperature=1.0, stop=["\n\n"], seed=args.seed)
    texts = [[o.text for o in outs[i * args.samples:(i + 1) * args.samples]] for i in range(len(prompts))]
    made = records(rater, prompts, texts)["dpo"]
    tok, block = model.tokenizer, model.config.block_size

    def fits(p: str, c: str) -> bool:
        return len(tok.encode(p)) + len(tok.encode(c)) + 1 <= block

    pairs = [r for r in made if fits(r["prompt"], r["chosen"]) and fits(r["prompt"], r["rejected"])]
    return pairs, {"prompts": len(prompts), "completions": len(prompts) * args.samples,
                   "pairs_made": len(made), "pairs_fitting": len(pairs)}


def train_settings(args: argparse.Namespace) -> dict[str, Any]:
    return {"objective": "dpo", "beta": args.beta, "lr": args.lr, "min_lr": args.lr,
            "batch_size": args.batch, "steps": args.steps, "warmup_steps": 0, "weight_decay": 0.0,
            "betas": [0.9, 0.99], "grad_clip": 1.0, "precision": "fp32", "compile": False,
            "threads": args.threads, "seed": args.seed, "log_every": 1, "eval_every": args.steps,
            "eval_batches": 2, "checkpoint_every": args.steps, "tensorboard": False,
            "ema_decay": None}


def run_genloop(parent: str, source: Path, args: argparse.Namespace) -> dict[str, Any]:
    import yaml

    from genloop.models.modeldir import ModelDir
    from genloop.store import Store
    from genloop.training.loop import train
    from genloop.training.recipe import load_recipe

    store = Store()
    version = store.resolve(parent)
    frozen = yaml.safe_load(ModelDir(Path(version.path)).recipe_file.read_text(encoding="utf-8"))
    recipe = load_recipe({"name": "dpo-trl-genloop", "parent": version.ref,
                          "data": {"kind": "preferences", "source": str(source)},
                          "model": frozen["model"], "train": train_settings(args)})
    t0 = time.perf_counter()
    result = train(recipe)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "train/loss" in r}
    curve = [{"step": s, "loss": steps[s]["train/loss"],
              "reward_accuracy": steps[s]["train/reward_accuracy"],
              "reward_margin": steps[s]["train/reward_margin"],
              "chosen_reward": steps[s]["train/chosen_reward"],
              "rejected_reward": steps[s]["train/rejected_reward"],
              "step_s": args.batch / steps[s]["pairs_per_s"]} for s in sorted(steps)]
    return {"curve": curve, "wall_s": wall, "run_id": result.run_id,
            "dataset_hash": store.get_run(result.run_id).dataset_hash}


def genloop_batches(dataset_hash: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The records of genloop's batches, step by step, in its order (``PreferenceBatches``), as
    token ids (the end-of-text of each completion dropped: TRL appends its own)."""
    import torch

    from genloop.data.preferences import load_preferences_dataset
    from genloop.store import Store
    from genloop.training.batches import step_generator

    data = load_preferences_dataset(Store().get_dataset(dataset_hash).path)
    train, eos = data.train, data.tokenizer.eos_id
    rows = []
    for step in range(args.steps):
        g = step_generator(args.seed, step, 0, 0)
        for i in torch.randint(0, len(train), (args.batch,), generator=g).tolist():
            ids = {k: [int(t) for t in train.fields[k][i]] for k in ("prompt", "chosen", "rejected")}
            assert ids["chosen"][-1] == eos and ids["rejected"][-1] == eos
            rows.append({"prompt": ids["prompt"], "chosen": ids["chosen"][:-1],
                         "rejected": ids["rejected"][:-1]})
    return rows


def run_trl(export_dir: Path, batches: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    # TRL appends the end of text as text ("<eos>"): read it as the special token here (genloop
    # itself reads text that spells "<eos>" as characters, and the export keeps that default)
    tok = AutoTokenizer.from_pretrained(export_dir, split_special_tokens=False)
    texts = [{k: tok.decode(r[k]) for k in ("prompt", "chosen", "rejected")} for r in batches]
    model = AutoModelForCausalLM.from_pretrained(export_dir)
    reference = AutoModelForCausalLM.from_pretrained(export_dir)
    # GPT-2's layout has biases where genloop's gpt has none (exported as zeros): frozen, so
    # both train the same parameters (Adam would move each by about lr at its first step)
    frozen = [n for n, p in model.named_parameters() if n.endswith(".bias")]
    for name, p in model.named_parameters():
        p.requires_grad_(not name.endswith(".bias"))

    class StepTimes(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t = 0.0

        def on_step_begin(self, *a: Any, **k: Any) -> None:
            self.t = time.perf_counter()

        def on_step_end(self, *a: Any, **k: Any) -> None:
            self.times.append(time.perf_counter() - self.t)

    timer = StepTimes()
    with tempfile.TemporaryDirectory() as out:
        config = DPOConfig(
            output_dir=out, beta=args.beta, loss_type=["sigmoid"], learning_rate=args.lr,
            per_device_train_batch_size=args.batch, max_steps=args.steps, num_train_epochs=1,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
            adam_beta2=0.99, adam_epsilon=1e-8, max_grad_norm=1.0, optim="adamw_torch_fused",
            train_sampling_strategy="sequential", max_length=None, disable_dropout=True,
            logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, seed=args.seed,
            bf16=False, fp16=False, dataloader_num_workers=0, gradient_accumulation_steps=1,
            disable_tqdm=True)
        trainer = DPOTrainer(model=model, ref_model=reference, args=config,
                             train_dataset=Dataset.from_list(texts), processing_class=tok,
                             callbacks=[timer])
        prepared = trainer.train_dataset
        same = all(prepared[i]["prompt_ids"] == r["prompt"]
                   and prepared[i]["chosen_ids"] == r["chosen"] + [tok.eos_token_id]
                   and prepared[i]["rejected_ids"] == r["rejected"] + [tok.eos_token_id]
                   for i, r in enumerate(batches))
        if not same:
            raise SystemExit("TRL's tokenization of the pairs differs from genloop's token ids")
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    logs = [h for h in trainer.state.log_history if "loss" in h and "rewards/accuracies" in h]
    curve = [{"step": h["step"], "loss": h["loss"], "reward_accuracy": h["rewards/accuracies"],
              "reward_margin": h["rewards/margins"], "chosen_reward": h["rewards/chosen"],
              "rejected_reward": h["rewards/rejected"], "step_s": timer.times[h["step"] - 1]}
             for h in logs]
    return {"curve": curve, "wall_s": wall, "same_token_ids": same, "frozen_biases": len(frozen)}


def compare(g: list[dict[str, Any]], t: list[dict[str, Any]]) -> dict[str, Any]:
    assert [r["step"] for r in g] == [r["step"] for r in t], "the two curves log different steps"
    d_loss = [abs(a["loss"] - b["loss"]) for a, b in zip(g, t, strict=True)]
    d_acc = [abs(a["reward_accuracy"] - b["reward_accuracy"]) for a, b in zip(g, t, strict=True)]
    d_margin = [abs(a["reward_margin"] - b["reward_margin"]) for a, b in zip(g, t, strict=True)]
    windows = []
    for lo in range(0, len(g), WINDOW):
        ga = statistics.fmean(r["reward_accuracy"] for r in g[lo:lo + WINDOW])
        ta = statistics.fmean(r["reward_accuracy"] for r in t[lo:lo + WINDOW])
        windows.append(abs(ga - ta))
    return {"max_abs_loss_diff": max(d_loss), "mean_abs_loss_diff": statistics.fmean(d_loss),
            "first_step_loss_diff": d_loss[0], "max_abs_margin_diff": max(d_margin),
            "steps_reward_accuracy_differs": sum(d > 1e-9 for d in d_acc),
            "max_window_reward_accuracy_diff": max(windows),
            "agree": max(d_loss) <= TOLERANCE["loss"]
            and max(windows) <= TOLERANCE["reward_accuracy_window"]}


def plot(g: list[dict[str, Any]], t: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    steps = [r["step"] for r in g]
    for ax, key, label in ((axes[0], "loss", "DPO loss"), (axes[1], "reward_accuracy", "reward accuracy"),
                           (axes[2], "reward_margin", "reward margin")):
        ax.plot(steps, [r[key] for r in g], label="genloop dpo", lw=2)
        ax.plot(steps, [r[key] for r in t], label="TRL DPOTrainer", lw=1, ls="--")
        ax.set_xlabel("step")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(fig: dict[str, Any]) -> str:
    s, c, g, t = fig["settings"], fig["comparison"], fig["genloop"], fig["trl"]
    p = fig["pairs"]
    rows = [["", "genloop `dpo`", "TRL `DPOTrainer`"],
            ["final loss (last 10 steps' mean)", f"{g['final_loss']:.4f}", f"{t['final_loss']:.4f}"],
            ["final reward accuracy (last 10 steps' mean)", f"{g['final_accuracy']:.3f}",
             f"{t['final_accuracy']:.3f}"],
            ["seconds per step (median)", f"{g['median_step_s']:.4f}", f"{t['median_step_s']:.4f}"],
            ["seconds per step (mean)", f"{g['mean_step_s']:.4f}", f"{t['mean_step_s']:.4f}"],
            ["training wall time (s, set-up and final evaluation included for genloop)",
             f"{g['wall_s']:.1f}", f"{t['wall_s']:.1f}"]]
    verdict = "agree" if c["agree"] else "**do not agree**"
    return (
        "## DPO against the reference implementation (TRL)\n\n"
        f"The same {p['pairs_fitting']} preference pairs (the `shakespeare-brevity` rater's, on "
        f"{p['completions']} completions of {p['prompts']} speaker cues by the parent "
        f"`{fig['parent']}`, a {fig['parent_params']:,}-parameter char-level gpt), the same model "
        "(genloop's version; TRL trains its `genloop export --format hf` copy, logits equal), the "
        f"same batches in the same order (TRL's tokenization checked equal to genloop's ids: "
        f"{'yes' if fig['trl']['same_token_ids'] else 'no'}); β {s['beta']}, lr {s['lr']:g} constant, "
        f"batch {s['batch']}, {s['steps']} steps, AdamW (0.9, 0.99) without weight decay, clip 1.0, "
        f"fp32, {s['threads']} thread(s) each.\n\n"
        + table(rows[0], rows[1:]) + "\n" +
        f"\nThe curves {verdict} within the stated tolerance (loss within {TOLERANCE['loss']} at every "
        f"step; reward accuracy within {TOLERANCE['reward_accuracy_window']} averaged over windows of "
        f"{WINDOW} steps, since one batch's accuracy moves in steps of 1/{s['batch']}): largest loss "
        f"difference {c['max_abs_loss_diff']:.2e} (mean {c['mean_abs_loss_diff']:.2e}, first step "
        f"{c['first_step_loss_diff']:.1e}), largest margin difference {c['max_abs_margin_diff']:.2e}; "
        f"reward accuracy differs on {c['steps_reward_accuracy_differs']} of {s['steps']} steps, by at "
        f"most {c['max_window_reward_accuracy_diff']:.3f} over a window. "
        "![DPO curves, genloop vs TRL](bench/results/dpo_trl.png)\n"
    )


def summary(curve: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    times = [r["step_s"] for r in curve[1:]]  # the first step warms up
    return {"final_loss": statistics.fmean(r["loss"] for r in curve[-WINDOW:]),
            "final_accuracy": statistics.fmean(r["reward_accuracy"] for r in curve[-WINDOW:]),
            "median_step_s": statistics.median(times), "mean_step_s": statistics.fmean(times),
            "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--parent", help="a trained char-level gpt (name@N); default: train one here")
    ap.add_argument("--parent-steps", type=int, default=400)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--prompts", type=int, default=96)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    import genloop
    from genloop.data.formats import write_records
    from genloop.hub.export import export_hf

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    parent = args.parent or genloop.train(parent_recipe(args)).model_ref
    assert parent is not None
    print(f"parent {parent} ({time.perf_counter() - t0:.0f} s)", flush=True)
    pairs, counts = preference_pairs(parent, args)
    print(f"pairs: {counts}", flush=True)
    work = Path(os.environ["GENLOOP_HOME"]) / "dpo_trl"
    work.mkdir(parents=True, exist_ok=True)
    source = write_records(pairs, work)
    ours = run_genloop(parent, source, args)
    print(f"genloop: {ours['wall_s']:.0f} s", flush=True)
    export_dir = Path(tempfile.mkdtemp(dir=work)) / "hf"
    export_hf(parent, export_dir)
    batches = genloop_batches(ours["dataset_hash"], args)
    theirs = run_trl(export_dir, batches, args)
    print(f"trl: {theirs['wall_s']:.0f} s", flush=True)
    parent_params = sum(p.numel() for p in genloop.load(parent).network.parameters())
    fig = {
        "parent": parent, "parent_params": parent_params, "pairs": counts,
        "settings": {k: getattr(args, k) for k in ("steps", "batch", "lr", "beta", "threads", "seed")},
        "tolerance": TOLERANCE, "comparison": compare(ours["curve"], theirs["curve"]),
        "genloop": {**summary(ours["curve"], ours["wall_s"]), "curve": ours["curve"]},
        "trl": {**summary(theirs["curve"], theirs["wall_s"]), "curve": theirs["curve"],
                "same_token_ids": theirs["same_token_ids"]},
    }
    plot(ours["curve"], theirs["curve"], RESULTS / "dpo_trl.png")
    save("dpo_trl", fig, markdown(fig))
    print(json.dumps(fig["comparison"], indent=2))


if __name__ == "__main__":
    main()
