"""Image generation on MNIST (and Fashion-MNIST): every family and GAN loss, one feature extractor.

    python -m bench.images                      # every row (about an hour on 2 cores)
    python -m bench.images --only gan-hinge vae # some rows; earlier rows' results are kept
    python -m bench.images --report             # rewrite the section from saved results

Each row trains a built-in recipe (``mnist-diffusion``, ``mnist-gan`` with each of the five
losses, ``mnist-vae``) through the one training loop, and is scored by the loop's own final
evaluation: 1,000 samples against 1,000 test images in the feature space of ONE classifier
(``mnist-features@1``, trained first and pinned for every row), so the rows compare. Then:
DDIM with 50 steps against DDPM with 1,000 steps on the same diffusion model, and the best family
on Fashion-MNIST. Sample grids go to ``bench/results/images_<row>.png`` (one class per column).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, save, table

HOME = ROOT / "bench" / "out" / "images-home"
ROWS: dict[str, tuple[str, list[str]]] = {  # row -> (recipe, overrides)
    "diffusion": ("mnist-diffusion", []),
    "gan-minimax": ("mnist-gan", ["model.config.loss=minimax", "train.betas=[0.5, 0.999]"]),
    "gan-non_saturating": ("mnist-gan", ["model.config.loss=non_saturating", "train.betas=[0.5, 0.999]"]),
    "gan-least_squares": ("mnist-gan", ["model.config.loss=least_squares", "train.betas=[0.5, 0.999]"]),
    "gan-wgan_gp": ("mnist-gan", ["model.config.loss=wgan_gp", "model.config.spectral_norm=false",
                                  "train.lr=1e-4"]),
    "gan-hinge": ("mnist-gan", ["model.config.loss=hinge"]),
    # the same recipe trained twice as long: the figure behind the conditional-GAN target
    "gan-hinge-3000": ("mnist-gan", ["model.config.loss=hinge", "train.steps=3000"]),
    "vae": ("mnist-vae", []),
}
FASHION = ("mnist-diffusion", ["data.source=fashion-mnist", "name=fashion-diffusion"])
SAMPLERS = [("ddim", 50), ("ddpm", 1000)]
SAMPLER_IMAGES = 200


def progress(p: Any) -> None:
    """One line per phase change, evaluation and 100 steps: enough to follow a long run."""
    if p.phase == "train" and p.step % 100:
        return
    speed = f" {p.tokens_per_s:,.0f} {p.unit}/s" if p.tokens_per_s else ""
    loss = f" loss {p.loss:.4f}" if p.loss is not None else ""
    val = f" val {p.val_loss:.4f}" if p.val_loss is not None else ""
    print(f"[{time.strftime('%H:%M:%S')}] {p.phase} {p.step}/{p.steps}{loss}{val}{speed} {p.message}",
          flush=True)


@contextlib.contextmanager
def _locked() -> Any:
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / ".images.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def load_results() -> dict[str, Any]:
    path = RESULTS / "images.json"
    return json.loads(path.read_text()) if path.exists() else {}


def train_row(name: str, recipe: str, overrides: list[str], extractor: str | None) -> dict[str, Any]:
    import genloop
    from genloop.generation.image import save_grid

    pin = [f"eval.feature_extractor={extractor}"] if extractor else []
    t0 = time.perf_counter()
    result = genloop.train(recipe, overrides=[f"name=bench-{name}", *overrides, *pin,
                                              "train.tensorboard=false"], on_progress=progress)
    wall = time.perf_counter() - t0
    model = genloop.load(result.model_ref)
    drawn = model.generate(num_samples=100, seed=1, guidance_scale=2.0)
    save_grid(drawn.output.images, RESULTS / f"images_{name}.png", columns=10)
    return {"model": result.model_ref, "recipe": recipe, "overrides": overrides,
            "metrics": result.metrics, "wall_s": wall}


def compare_samplers(model_ref: str, extractor: str, images: int) -> list[dict[str, Any]]:
    """The same diffusion model, the same seed and classes: DDIM-50 against DDPM-1000."""
    from genloop.evaluation.run import evaluate_version

    rows = []
    for sampler, steps in SAMPLERS:
        t0 = time.perf_counter()
        m = evaluate_version(model_ref, num_samples=images, seed=0, steps=steps, sampler=sampler,
                             guidance_scale=2.0, feature_extractor=extractor, grid=0)
        rows.append({"sampler": sampler, "steps": steps, "seconds": time.perf_counter() - t0, **m})
    return rows


def report(results: dict[str, Any]) -> None:
    order = [r for r in ROWS if r in results]
    gans = [results[r]["metrics"]["fid"] for r in order if r.startswith("gan-")]
    if gans and "diffusion" in results:
        results["diffusion_fid_over_best_gan"] = results["diffusion"]["metrics"]["fid"] / min(gans)
    rows = []
    for name in order:
        m = results[name]["metrics"]
        rows.append([name, m.get("fid"), m.get("kid"), m.get("precision"), m.get("recall"),
                     m.get("sample_accuracy", "—"), m.get("test_iw_nll_nats", "—"),
                     m["train_steps"], m["train_time_s"], m["train_images_per_s"],
                     m.get("sample_images_per_s")])
    lines = [
        "## Images: MNIST, every family and GAN loss",
        "",
        *(["Produced by these runs, two at a time with one thread each (the 2 cores shared), in one "
           "workspace so every row shares the classifier:", "", "```bash",
           *results["runs"], "```", ""] if results.get("runs") else []),
        "Each row trains a built-in recipe through the one training loop and is scored by the loop's "
        "final evaluation: 1,000 samples (classes in turn for conditional models) against 1,000 test "
        f"images, in the features of one classifier, `{results.get('extractor', '?')}` "
        f"(test accuracy {results.get('extractor_accuracy', float('nan')):.4f}), the same for every row. "
        "FID and KID are therefore *FID under genloop's MNIST classifier*: comparable between rows, not "
        "with published Inception-v3 FIDs. Sample accuracy: the share of samples that classifier assigns "
        "to the requested digit. Diffusion samples with DDIM, 50 steps, guidance 2.0. Training time is "
        "the wall time of the loop (evaluations and checkpoints included); images/s counts training "
        "images per second of training steps.",
        "",
        table(["row", "FID", "KID", "precision", "recall", "sample acc.", "IW-NLL (nats)", "steps",
               "train (s)", "train img/s", "sample img/s"], rows),
        "",
    ]
    if "vae" in results:
        m = results["vae"]["metrics"]
        lines += [
            f"VAE on dynamically binarised MNIST: test negative ELBO {m['test_nelbo_nats']:.2f} nats, "
            f"importance-weighted NLL {m['test_iw_nll_nats']:.2f} nats (k = "
            f"{results['vae'].get('importance_samples', 1000)} samples, 1,000 test images; "
            "Burda et al. 2016).",
            "",
        ]
    if "guidance3" in results:
        m = results["guidance3"]["metrics"]
        lines += [
            "The `diffusion` row's model sampled again with guidance 3.0 (same 1,000 classes, seed, "
            f"DDIM 50): FID {m['fid']:.3f}, KID {m['kid']:.4f}, precision {m['precision']:.3f}, recall "
            f"{m['recall']:.3f}, sample accuracy **{m['sample_accuracy']:.3f}**. Stronger guidance trades "
            "diversity for fidelity to the class (Ho & Salimans 2021).",
            "",
        ]
    if "samplers" in results:
        lines += [
            "### Sampling: DDIM 50 steps vs DDPM 1,000 steps",
            "",
            f"The `diffusion` row's model, {results['samplers'][0]['eval_images']:.0f} samples each "
            "(same seed, classes in turn, "
            "guidance 2.0), against as many test images; FID from a few hundred samples is biased upward, so "
            "compare these two rows with each other, not with the table above.",
            "",
            table(["sampler", "steps", "FID", "KID", "precision", "recall", "sample acc.", "seconds",
                   "images/s"],
                  [[r["sampler"], r["steps"], r["fid"], r["kid"], r["precision"], r["recall"],
                    r.get("sample_accuracy"), r["seconds"], r["sample_images_per_s"]]
                   for r in results["samplers"]]),
            "",
        ]
    if "fashion" in results:
        f = results["fashion"]
        m = f["metrics"]
        lines += [
            "### Fashion-MNIST: the best family",
            "",
            f"`mnist-diffusion` with `data.source=fashion-mnist` (its own classifier, "
            f"`{results.get('fashion_extractor', '?')}`, test accuracy "
            f"{results.get('fashion_extractor_accuracy', float('nan')):.4f}): FID {m['fid']:.3f}, KID "
            f"{m['kid']:.4f}, precision {m['precision']:.3f}, recall {m['recall']:.3f}, sample accuracy "
            f"{m['sample_accuracy']:.3f}; {m['train_steps']} steps in {m['train_time_s']:.0f} s.",
            "",
            "![Fashion-MNIST samples](bench/results/images_fashion.png)",
            "",
        ]
    lines += ["### Samples (one class per column)", ""]
    for name in order:
        lines += [f"**{name}**", "", f"![{name}](bench/results/images_{name}.png)", ""]
    save("images", results, "\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="*", help=f"rows: {', '.join(ROWS)}, guidance3, samplers, fashion")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra override for every row, e.g. train.steps=500")
    ap.add_argument("--report", action="store_true", help="only rewrite the report")
    ap.add_argument("--fresh", action="store_true", help="start from an empty workspace")
    ap.add_argument("--sampler-images", type=int, default=SAMPLER_IMAGES,
                    help="samples per sampler in the DDIM/DDPM comparison")
    args = ap.parse_args()
    if args.fresh and HOME.exists():
        shutil.rmtree(HOME)
    os.environ["GENLOOP_HOME"] = str(HOME)
    shared = ROOT.parent / "shared" / "data"  # the mirror beside the checkout, as CI sets it
    if shared.is_dir():
        os.environ.setdefault("GENLOOP_DATA_MIRROR", str(shared))
    results = load_results()
    if args.report:
        report(results)
        return
    from genloop.data.images import ImageDataConfig
    from genloop.store import Store
    from genloop.training.loop import train
    from genloop.training.recipe import load_recipe

    wanted = args.only or [*ROWS, "guidance3", "samplers", "fashion"]
    store = Store()

    def extractor_for(recipe: str, overrides: list[str], key: str) -> str:
        from genloop.training.features import extractor_recipe

        r = load_recipe(recipe, overrides)
        ds = r.data.prepare()
        mine = [v for v in store.list_models()
                if v.name == f"{ds.name}-features" and v.dataset_hash == ds.hash]
        if mine:
            ref = max(mine, key=lambda v: v.version).ref
        else:
            ref = train(extractor_recipe(r, ds), on_progress=progress).model_ref
        results[key] = ref
        results[key + "_accuracy"] = store.resolve(ref).metrics["test_accuracy"]
        return ref

    assert isinstance(ImageDataConfig(source="mnist"), ImageDataConfig)
    extractor = extractor_for("mnist-diffusion", [], "extractor")
    done: set[str] = set()
    for name in wanted:
        done.add(name)
        if name in ROWS:
            recipe, overrides = ROWS[name]
            results[name] = train_row(name, recipe, [*overrides, *args.overrides], extractor)
            if name == "vae":
                results[name]["importance_samples"] = load_recipe(recipe).eval.importance_samples
        elif name == "guidance3":  # the same diffusion model, sampled with stronger guidance
            from genloop.evaluation.run import evaluate_version

            t0 = time.perf_counter()
            m = evaluate_version(results["diffusion"]["model"], num_samples=1000, seed=0, steps=50,
                                 sampler="ddim", guidance_scale=3.0, feature_extractor=extractor, grid=0)
            results["guidance3"] = {"model": results["diffusion"]["model"], "guidance_scale": 3.0,
                                    "metrics": m, "seconds": time.perf_counter() - t0}
        elif name == "samplers":
            results["samplers"] = compare_samplers(results["diffusion"]["model"], extractor,
                                                   args.sampler_images)
        elif name == "fashion":
            recipe, overrides = FASHION
            fx = extractor_for(recipe, [*overrides, *args.overrides], "fashion_extractor")
            results["fashion"] = train_row("fashion", recipe, [*overrides, *args.overrides], fx)
        with _locked():  # two processes may run rows side by side: merge, never overwrite
            merged = {**load_results(), **{k: v for k, v in results.items() if k in done or "extractor" in k}}
            (RESULTS / "images.json").write_text(json.dumps(merged, indent=2, default=str))
            report(merged)
    print(Path(RESULTS / "images.md").read_text())


if __name__ == "__main__":
    main()
