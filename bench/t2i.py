"""Text ↔ image on shapes and shapes-pairs: faithfulness on held-out compositions, captions, ablations.

    python -m bench.t2i                          # every section (a few hours on 2 cores)
    python -m bench.t2i --only faithfulness guidance captioning
    python -m bench.t2i --only fusion encoders --ablation-seconds 480
    python -m bench.t2i --report                 # rewrite the section from saved results
    python -m bench.t2i --quick                  # every section at toy size (a smoke test, minutes):
                                                 # results under bench/out/t2i-quick, BENCHMARKS.md untouched

Sections (each keeps the others' saved results):

- ``faithfulness``: ``shapes-t2i`` and ``shapes-pairs-t2i`` (and ``shapes-t2i-gan`` when that
  recipe exists) trained through the one loop; its final evaluation generates one image per test
  prompt (half of them held-out compositions, never drawn in training) and the dataset's
  recogniser — trained on first need and registered, its own accuracy on real test images beside
  the figure — reads every attribute back. Training time is the loop's wall time.
- ``guidance``: the single-shape model sampled again at guidance 1, 2, 3, 5: faithfulness against
  FID (under the recogniser's features), a table and a plot.
- ``captioning``: ``shapes-captioner`` and ``shapes-pairs-captioner``: exact attribute accuracy on
  held-out images, BLEU-4 and CIDEr against five reference phrasings, diversity; then the round
  trip caption(generate(prompt)) against the prompt.
- ``fusion``: the single-shape model with cross-attention, concatenation and FiLM fusion, at equal
  training time (``train.time_limit_s``): held-out faithfulness and faithfulness on paraphrased
  prompts (phrasings never used in training).
- ``encoders``: from scratch, genloop's masked-LM pretrained ``shapes-mlm`` and MiniLM, each frozen
  and tuned, at equal training time: the same two figures.
- ``grids``: README sample grids, prompts on rows (held-out compositions marked), seeds on columns.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, save, table

NAME = "t2i"
SECTIONS = ("faithfulness", "guidance", "captioning", "fusion", "caption_fusion", "encoders", "grids")
GUIDANCE = (1.0, 2.0, 3.0, 5.0)
FUSIONS = ("cross_attention", "concat", "film")
ENCODERS = {  # row -> text_encoder overrides ({mlm}: the shapes-mlm version trained first)
    "scratch": [],
    "mlm-frozen": ["model.config.text_encoder.ref={mlm}", "model.config.text_encoder.freeze=true"],
    "mlm-tuned": ["model.config.text_encoder.ref={mlm}", "model.config.text_encoder.freeze=false"],
    "minilm-frozen": ["model.config.text_encoder.ref=minilm", "model.config.text_encoder.freeze=true"],
    "minilm-tuned": ["model.config.text_encoder.ref=minilm", "model.config.text_encoder.freeze=false"],
}
TARGETS = {  # figure -> (target, label) as in the issue
    "single_seen": 0.95, "single_heldout": 0.85, "pairs_heldout": 0.70, "recogniser": 0.99,
    "caption_single": 0.95, "caption_pairs": 0.85,
}
# toy sizes for --quick: every section runs, in minutes; figures mean nothing
QUICK = ["model.preset=tiny", "train.steps=12", "train.batch_size=8", "train.warmup_steps=2",
         "train.eval_every=12", "train.eval_batches=1", "train.checkpoint_every=12", "train.log_every=4",
         "train.compile=false", "data.max_images=256", "eval.num_samples=8", "eval.batch_size=8",
         "eval.steps=4", "eval.grid=0", "eval.recogniser_steps=12"]


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.quick = args.quick
        self.results_dir = ROOT / "bench" / "out" / "t2i-quick" if self.quick else RESULTS
        self.extra = [*(QUICK if self.quick else []), *args.overrides]
        self.seconds = 20.0 if self.quick else args.ablation_seconds
        self.caption_seconds = 20.0 if self.quick else args.caption_seconds
        self.samples = 8 if self.quick else args.eval_samples
        path = self.results_dir / f"{NAME}.json"
        self.results: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}

    # --- plumbing -------------------------------------------------------------------------------

    def train(self, row: str, recipe: str, overrides: list[str]) -> dict[str, Any]:
        import genloop

        t0 = time.perf_counter()
        result = genloop.train(recipe, overrides=[f"name=bench-t2i-{row}", "train.tensorboard=false",
                                                  *overrides, *self.extra], on_progress=progress)
        return {"model": result.model_ref, "recipe": recipe, "overrides": overrides,
                "metrics": result.metrics, "wall_s": time.perf_counter() - t0}

    def recogniser(self, dataset: str) -> tuple[str, dict[str, float]]:
        """The newest registered recogniser of ``dataset`` (the faithfulness rows trained it)."""
        from genloop.store import Store

        mine = [v for v in Store().list_models() if v.name == f"{dataset}-recogniser"]
        if not mine:
            raise SystemExit(f"no {dataset}-recogniser yet: run the faithfulness section first")
        v = max(mine, key=lambda v: v.version)
        return v.ref, dict(v.metrics)

    def pin(self, dataset: str) -> list[str]:
        """Every later row of ``dataset`` judged by the same recogniser as the first."""
        try:
            return [f"eval.recogniser={self.recogniser(dataset)[0]}"]
        except SystemExit:
            return []

    def keep(self) -> None:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        (self.results_dir / f"{NAME}.json").write_text(json.dumps(self.results, indent=2, default=str))

    # --- sections -------------------------------------------------------------------------------

    def faithfulness(self) -> None:
        from genloop.training.recipe import builtin_recipes

        rows = [("single", "shapes-t2i", "shapes"), ("pairs", "shapes-pairs-t2i", "shapes-pairs")]
        if "shapes-t2i-gan" in builtin_recipes():
            rows.append(("gan", "shapes-t2i-gan", "shapes"))
        for row, recipe, dataset in rows:
            r = self.train(row, recipe, [f"eval.num_samples={self.samples}", "eval.paraphrased=true",
                                         *self.pin(dataset)])
            r["recogniser"], r["recogniser_metrics"] = self.recogniser(dataset)
            self.results[row] = r
            self.keep()

    def guidance(self) -> None:
        from genloop.evaluation.image_text import evaluate_ref

        model = self.need("single")
        sweep = []
        for scale in GUIDANCE:
            t0 = time.perf_counter()
            m = evaluate_ref(model, guidance_scale=scale, num_samples=self.samples,
                             recogniser=self.results["single"]["recogniser"],
                             **({"steps": 4} if self.quick else {}))
            sweep.append({"guidance_scale": scale, "seconds": time.perf_counter() - t0, **m})
        self.results["guidance"] = sweep
        self.plot_guidance(sweep)

    def captioning(self) -> None:
        for row, recipe in (("captioner_single", "shapes-captioner"),
                            ("captioner_pairs", "shapes-pairs-captioner")):
            self.results[row] = self.train(row, recipe, [f"eval.num_samples={self.samples}"])
            self.keep()
        self.results["round_trip"] = self.round_trip()

    def round_trip(self) -> dict[str, Any]:
        import numpy as np

        from genloop.data.image_text import load_image_text_dataset
        from genloop.evaluation.image_text import round_trip
        from genloop.hub.adapters import load_network
        from genloop.models.modeldir import ModelDir
        from genloop.store import Store

        store = Store()
        out = {}
        for kind in ("single", "pairs"):
            if kind not in self.results or f"captioner_{kind}" not in self.results:
                continue
            loaded = []
            for ref in (self.results[kind]["model"], self.results[f"captioner_{kind}"]["model"]):
                version = store.resolve(ref)
                family, config, network = load_network(version, store)
                loaded.append((family, network.eval(), config, ModelDir(Path(version.path)).tokenizer()))
            lineage = ModelDir(Path(store.resolve(self.results[kind]["model"]).path)).lineage()
            dataset = load_image_text_dataset(store.get_dataset(lineage["dataset_hash"]).path)
            idx = np.unique(np.linspace(0, len(dataset.test) - 1, min(self.samples, len(dataset.test)))
                            .round().astype(int))
            prompts = [dataset.captions["test"][i] for i in idx]
            (f, m, c, t), (cf, cm, _, ct) = loaded
            figures, captions = round_trip((f, m, c, t), (cf, cm, ct), prompts, dataset.schema,
                                           heldout=np.asarray(dataset.test_heldout)[idx],
                                           steps=4 if self.quick else None)
            out[kind] = {**figures, "examples": [[p, c] for p, c in zip(prompts[:6], captions[:6],
                                                                          strict=False)]}
        return out

    def ablation(self, section: str, rows: dict[str, list[str]]) -> None:
        base = ["train.steps=100000" if not self.quick else "train.steps=1000",
                f"train.time_limit_s={self.seconds}", f"eval.num_samples={self.samples}",
                "eval.paraphrased=true", *self.pin("shapes")]
        done = self.results.setdefault(section, {})
        for row, overrides in rows.items():
            r = self.train(f"{section}-{row}", "shapes-t2i", [*base, *overrides])
            done[row] = r
            self.keep()

    def fusion(self) -> None:
        self.ablation("fusion", {f: [f"model.config.fusion={f}"] for f in FUSIONS})

    def caption_fusion(self) -> None:
        """The same fusion block in the other direction: ``shapes-captioner`` with each fusion,
        stopped after the same wall time."""
        done = self.results.setdefault("caption_fusion", {})
        for f in FUSIONS:
            done[f] = self.train(f"caption-fusion-{f}", "shapes-captioner", [
                "train.steps=100000", f"train.time_limit_s={self.caption_seconds}",
                f"model.config.fusion={f}", f"eval.num_samples={self.samples}"])
            self.keep()

    def encoders(self) -> None:
        import genloop

        mlm = self.results.get("mlm")
        if not mlm:
            r = genloop.train("shapes-mlm", overrides=["train.tensorboard=false", *self.extra_mlm()],
                              on_progress=progress)
            mlm = self.results["mlm"] = {"model": r.model_ref, "metrics": r.metrics}
        rows = {row: [o.format(mlm=mlm["model"]) for o in overrides] for row, overrides in ENCODERS.items()}
        self.ablation("encoders", rows)

    def extra_mlm(self) -> list[str]:
        return (["train.steps=12", "train.batch_size=8", "train.warmup_steps=2", "train.eval_every=12",
                 "train.eval_batches=1", "train.checkpoint_every=12", "train.compile=false"]
                if self.quick else [])

    def grids(self) -> None:
        import numpy as np

        import genloop
        from genloop.data.image_text import load_image_text_dataset
        from genloop.models.modeldir import ModelDir
        from genloop.store import Store

        store = Store()
        out = {}
        for kind, per in (("single", 4), ("pairs", 3)):
            if kind not in self.results:
                continue
            ref = self.results[kind]["model"]
            lineage = ModelDir(Path(store.resolve(ref).path)).lineage()
            dataset = load_image_text_dataset(store.get_dataset(lineage["dataset_hash"]).path)
            held = np.asarray(dataset.test_heldout)
            picks = [*np.flatnonzero(~held)[:per], *np.flatnonzero(held)[:per]]
            prompts = [dataset.captions["test"][i] for i in picks]
            model = genloop.load(ref)
            rows = []
            for p in prompts:
                drawn = model.generate(prompt=p, num_samples=6, seed=1, guidance_scale=3.0,
                                       **({"steps": 4} if self.quick else {}))
                rows.append(drawn.output.images)  # (6, H, W, C) uint8, one seed each
            path = self.results_dir / f"t2i_grid_{kind}.png"
            draw_grid(rows, prompts, [bool(held[i]) for i in picks], path)
            out[kind] = {"path": str(path.relative_to(ROOT)), "prompts": prompts,
                         "heldout": [bool(held[i]) for i in picks]}
        self.results["grids"] = out

    def need(self, row: str) -> str:
        if row not in self.results:
            raise SystemExit(f"section needs the {row!r} model: run --only faithfulness first")
        return str(self.results[row]["model"])

    def plot_guidance(self, sweep: list[dict[str, Any]]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3.5))
        xs = [r.get("fid", float("nan")) for r in sweep]
        for key, label in (("faithfulness_seen", "seen"), ("faithfulness_heldout", "held-out")):
            ys = [r.get(key, float("nan")) for r in sweep]
            ax.plot(xs, ys, marker="o", label=label)
            for x, y, r in zip(xs, ys, sweep, strict=True):
                ax.annotate(f"s={r['guidance_scale']:g}", (x, y), textcoords="offset points", xytext=(4, 4),
                            fontsize=8)
        ax.set_xlabel("FID (recogniser features, lower is better)")
        ax.set_ylabel("faithfulness")
        ax.set_title("shapes-t2i: guidance scale sweep")
        ax.legend()
        fig.tight_layout()
        self.results_dir.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.results_dir / "t2i_guidance.png", dpi=120)
        plt.close(fig)


def draw_grid(rows: list[Any], prompts: list[str], heldout: list[bool], path: Path) -> None:
    """Prompts on rows (held-out compositions marked), seeds on columns, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), cols + 1, figsize=(1.1 * cols + 3.2, 1.1 * len(rows)),
                             gridspec_kw={"width_ratios": [3.2] + [1] * cols}, squeeze=False)
    for i, (images, prompt, held) in enumerate(zip(rows, prompts, heldout, strict=True)):
        axes[i, 0].text(1.0, 0.5, prompt + ("\n[held-out]" if held else ""), ha="right", va="center",
                        fontsize=8, color="crimson" if held else "black", transform=axes[i, 0].transAxes)
        for j in range(cols + 1):
            axes[i, j].axis("off")
        for j, img in enumerate(np.asarray(images)[:cols]):
            axes[i, j + 1].imshow(img.squeeze(), interpolation="nearest")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def progress(p: Any) -> None:
    if p.phase == "train" and p.step % 100:
        return
    loss = f" loss {p.loss:.4f}" if p.loss is not None else ""
    print(f"[{time.strftime('%H:%M:%S')}] {p.phase} {p.step}/{p.steps}{loss} {p.message}", flush=True)


# --- the report -----------------------------------------------------------------------------------


def _m(results: dict[str, Any], row: str, key: str) -> Any:
    return results.get(row, {}).get("metrics", {}).get(key, "—")


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The figures BENCHMARKS.md's summary reads (bench/common.py TARGETS)."""
    h: dict[str, Any] = {}
    for row in ("single", "pairs"):
        if row in results:
            m = results[row]["metrics"]
            h[f"{row}_seen"] = m.get("faithfulness_seen")
            h[f"{row}_heldout"] = m.get("faithfulness_heldout")
            h[f"{row}_recogniser"] = results[row].get("recogniser_metrics", {}).get("test_accuracy")
    for row in ("single", "pairs"):
        if f"captioner_{row}" in results:
            m = results[f"captioner_{row}"]["metrics"]
            h[f"caption_{row}_heldout"] = m.get("caption_accuracy_heldout")
            h[f"caption_{row}_bleu4"], h[f"caption_{row}_cider"] = m.get("bleu4"), m.get("cider")
    for row, r in results.get("round_trip", {}).items():
        h[f"round_trip_{row}"] = r.get("round_trip")
    return {k: v for k, v in h.items() if v is not None}


def verdict(value: Any, target: float) -> str:
    if not isinstance(value, float):
        return "—"
    return "met" if value >= target else "**missed**"


def report(results: dict[str, Any], results_dir: Path, quick: bool) -> str:
    results["headline"] = headline(results)
    rel = "bench/results" if not quick else str(results_dir.relative_to(ROOT))
    lines = ["## Text ↔ image: shapes and shapes-pairs, held-out compositions", "",
             "Every model trains through the one loop on the built-in `shapes` (one object: shape, colour, "
             "size, position) or `shapes-pairs` (two objects and a relation) and is judged by its final "
             "evaluation on the test split, half of whose scenes are **held-out compositions** never drawn "
             "in training (`data/shapes.py`). Text → image: one image per test prompt; the dataset's "
             "recogniser (a multi-head CNN trained on first need and registered, its accuracy on real test "
             "images beside) reads every attribute back; *faithfulness* is the share of images whose every "
             "attribute is the prompt's. FID is under the recogniser's features (comparable between rows "
             "here only). Captions are parsed back to attributes; BLEU-4 and CIDEr-D from pycocoevalcap's "
             "scorers against six reference phrasings per image.", ""]
    lines += [f"- {note}" for note in results.get("notes", [])] + ([""] if results.get("notes") else [])
    if results.get("commands"):
        lines += ["Sections and the commands that produced them: " + "; ".join(
            f"{section}: `{cmd}`" for section, cmd in results["commands"].items()) + ".", ""]
    if quick:
        lines += ["**--quick run: toy sizes, the figures mean nothing.**", ""]
    rows = []
    for row, label in (("single", "shapes (one object)"), ("pairs", "shapes-pairs"),
                       ("gan", "shapes, text-gan")):
        if row not in results:
            continue
        r = results[row]
        m, rm = r["metrics"], r.get("recogniser_metrics", {})
        rows.append([label, f"`{r['model']}`", m.get("faithfulness_seen", "—"),
                     m.get("faithfulness_heldout", "—"),
                     m.get("paraphrased_faithfulness", "—"), m.get("fid", "—"),
                     f"{rm.get('test_accuracy', float('nan')):.4f} (`{r.get('recogniser')}`)",
                     m.get("train_steps", "—"), m.get("train_time_s", "—")])
    if rows:
        lines += ["### Text → image faithfulness", "",
                  f"Targets: ≥ {TARGETS['single_seen']:g} seen and ≥ {TARGETS['single_heldout']:g} "
                  "held-out on "
                  f"single shapes, ≥ {TARGETS['pairs_heldout']:g} held-out on pairs; recogniser ≥ "
                  f"{TARGETS['recogniser']:g} on real test images.", "",
                  table(["data", "model", "seen", "held-out", "paraphrased", "FID", "recogniser acc.",
                         "steps", "train (s)"], rows), ""]
        for row in ("single", "pairs"):
            if row in results:
                m = results[row]["metrics"]
                per = [k for k in m if k.endswith("_accuracy") and not k.startswith("paraphrased")]
                lines += [f"Per attribute ({row}): " + ", ".join(f"{k.removesuffix('_accuracy')} "
                                                                f"{m[k]:.3f}" for k in per) + ".", ""]
    if "guidance" in results:
        lines += ["### Guidance sweep", "", "The single-shape model again, same prompts and seeds:", "",
                  table(["guidance", "seen", "held-out", "FID", "seconds"],
                        [[r["guidance_scale"], r.get("faithfulness_seen", "—"),
                          r.get("faithfulness_heldout", "—"),
                          r.get("fid", "—"), r["seconds"]] for r in results["guidance"]]), "",
                  f"![guidance sweep]({rel}/t2i_guidance.png)", ""]
    cap = [[label, f"`{results[row]['model']}`", _m(results, row, "caption_accuracy_heldout"),
            _m(results, row, "caption_accuracy_seen"), _m(results, row, "bleu4"), _m(results, row, "cider"),
            _m(results, row, "diversity"), _m(results, row, "train_time_s")]
           for row, label in (("captioner_single", "shapes"), ("captioner_pairs", "shapes-pairs"))
           if row in results]
    if cap:
        lines += ["### Captioning", "",
                  f"Whole-caption exact attribute accuracy on held-out images (targets ≥ "
                  f"{TARGETS['caption_single']:g} single, ≥ {TARGETS['caption_pairs']:g} pairs); diversity = "
                  "distinct captions / images.", "",
                  table(["data", "model", "held-out acc.", "seen acc.", "BLEU-4", "CIDEr", "diversity",
                         "train (s)"], cap), ""]
    for row, r in results.get("round_trip", {}).items():
        per = [k for k in r if k.endswith("_accuracy")]
        lines += [f"Round trip ({row}): caption(generate(prompt)) parses back to the prompt for "
                  f"**{r.get('round_trip', float('nan')):.3f}** of the prompts (seen "
                  f"{r.get('round_trip_seen', float('nan')):.3f}, held-out "
                  f"{r.get('round_trip_heldout', float('nan')):.3f}); the captioner reads back "
                  + ", ".join(f"{k.removesuffix('_accuracy')} {r[k]:.3f}" for k in per) + ".",
                  ""]
    for section, title in (("fusion", "Fusion ablation"), ("encoders", "Encoder ablation")):
        if section not in results:
            continue
        lines += [f"### {title} (equal training time)", "",
                  "`shapes-t2i` with one change per row, each stopped after the same wall time "
                  "(`train.time_limit_s`); held-out faithfulness and faithfulness on paraphrased prompts "
                  "(phrasings never used in training; words outside the vocabulary map to the unknown "
                  "token).",
                  "",
                  table(["row", "held-out", "seen", "paraphrased", "FID", "steps", "train (s)"],
                        [[row, r["metrics"].get("faithfulness_heldout", "—"),
                          r["metrics"].get("faithfulness_seen", "—"),
                          r["metrics"].get("paraphrased_faithfulness", "—"), r["metrics"].get("fid", "—"),
                          r["metrics"].get("train_steps", "—"), r["metrics"].get("train_time_s", "—")]
                         for row, r in results[section].items()]), ""]
    if "caption_fusion" in results:
        lines += ["### Fusion ablation, image → text (equal training time)", "",
                  "`shapes-captioner` with each fusion block in its decoder, each stopped after the same "
                  "wall time: whole-caption exact attribute accuracy on held-out and seen test images.", "",
                  table(["fusion", "held-out acc.", "seen acc.", "BLEU-4", "CIDEr", "steps", "train (s)"],
                        [[row, r["metrics"].get("caption_accuracy_heldout", "—"),
                          r["metrics"].get("caption_accuracy_seen", "—"), r["metrics"].get("bleu4", "—"),
                          r["metrics"].get("cider", "—"), r["metrics"].get("train_steps", "—"),
                          r["metrics"].get("train_time_s", "—")]
                         for row, r in results["caption_fusion"].items()]), ""]
    if "grids" in results:
        lines += ["### Samples", "", "Prompts on rows (held-out compositions marked in red), seeds on "
                  "columns, "
                  "guidance 3.", ""]
        for kind, g in results["grids"].items():
            lines += [f"![{kind}]({g['path']})", ""]
    h = results["headline"]
    checks = [("single seen", h.get("single_seen"), TARGETS["single_seen"]),
              ("single held-out", h.get("single_heldout"), TARGETS["single_heldout"]),
              ("pairs held-out", h.get("pairs_heldout"), TARGETS["pairs_heldout"]),
              ("recogniser (single)", h.get("single_recogniser"), TARGETS["recogniser"]),
              ("recogniser (pairs)", h.get("pairs_recogniser"), TARGETS["recogniser"]),
              ("captions held-out (single)", h.get("caption_single_heldout"), TARGETS["caption_single"]),
              ("captions held-out (pairs)", h.get("caption_pairs_heldout"), TARGETS["caption_pairs"])]
    lines += ["### Against the issue's targets", "",
              table(["figure", "measured", "target", ""],
                    [[n, v if v is not None else "—", f"≥ {t:g}", verdict(v, t)] for n, v, t in checks]), ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="sections to run (default: all)")
    ap.add_argument("--quick", action="store_true", help="toy sizes, results under bench/out/t2i-quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="extra override for every training run, e.g. train.steps=500")
    ap.add_argument("--ablation-seconds", type=float, default=480.0,
                    help="training time of each fusion / encoder row")
    ap.add_argument("--caption-seconds", type=float, default=90.0,
                    help="training time of each captioner fusion row")
    ap.add_argument("--eval-samples", type=int, default=500, help="test prompts (or images) judged per row")
    ap.add_argument("--report", action="store_true", help="only rewrite the report")
    ap.add_argument("--fresh", action="store_true", help="start from an empty workspace")
    args = ap.parse_args()
    bench = Bench(args)
    home = ROOT / "bench" / "out" / ("t2i-quick-home" if args.quick else "t2i-home")
    if (args.fresh or args.quick) and home.exists():
        shutil.rmtree(home)
        if args.quick:
            bench.results = {}
    os.environ["GENLOOP_HOME"] = str(home)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    shared = ROOT.parent / "shared" / "data"
    if shared.is_dir():
        os.environ.setdefault("GENLOOP_DATA_MIRROR", str(shared))
    if not args.report:
        for section in args.only or SECTIONS:
            print(f"[{time.strftime('%H:%M:%S')}] section {section}", flush=True)
            getattr(bench, section)()
            # each section's own command: the report names what produced every table
            bench.results.setdefault("commands", {})[section] = " ".join(["python -m bench.t2i",
                                                                          *sys.argv[1:]])
            bench.keep()
    markdown = report(bench.results, bench.results_dir, bench.quick)
    bench.keep()
    if bench.quick:  # a smoke test: BENCHMARKS.md is left alone
        (bench.results_dir / f"{NAME}.md").write_text(markdown + "\n")
    else:
        save(NAME, bench.results, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
