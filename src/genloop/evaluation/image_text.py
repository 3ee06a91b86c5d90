"""Text ↔ image evaluation where the truth is known: faithfulness, caption accuracy, BLEU/CIDEr.

``shapes`` and ``shapes-pairs`` draw every image from a scene whose attributes (shape, colour,
size, position; two objects and a relation) are stored beside it, and ``data/scenes.py`` reads
the attributes back out of any phrasing of a caption (``parse``). So both directions are scored
exactly, and separately on the test split's held-out compositions, never drawn in training:

- **text → image faithfulness**: each test prompt generates one image, the ``recogniser``
  (``models/recogniser.py``, trained on first need like the feature extractor) reads its
  attributes back; the share of images whose every attribute is the prompt's, on seen and on
  held-out compositions (and, with ``eval.paraphrased``, on prompts in phrasings never used in
  training). Per-attribute accuracies beside it. FID between generated and real test images in
  the recogniser's penultimate features: "FID under the shapes recogniser" (a space that knows
  colour, size and place, unlike a shape classifier's), comparable between models scored with the
  same recogniser version only.
- **image → text**: each held-out test image captioned; the caption parsed back to attributes,
  exact accuracy per attribute and of the whole caption (an unparseable caption gets none right);
  diversity (distinct captions / images: a captioner that says one sentence for everything
  scores 1/N); BLEU-4 and CIDEr-D from pycocoevalcap's own scorers against every reference
  phrasing of the image (``ImageTextDataset.references``; CIDEr needs several). Its PTB tokenizer
  needs Java, so sentences are lower-cased and stripped of punctuation here instead.
- **the recogniser itself**: its accuracy per attribute and per image on real test images.
- **round trip**: caption(generate(prompt)) parsed against the prompt (``round_trip``).

Scenes with two objects have two equivalent descriptions ("a red circle left of a blue square" =
"a blue square right of a red circle"): both sides of every comparison are brought to one
canonical form first (``swap_spec``). A class-conditional family on image_text data is judged as
images (``evaluation/image.py``), unchanged.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from pydantic import Field

from genloop.data import scenes
from genloop.errors import InvalidInput, RecipeError
from genloop.evaluation import image
from genloop.evaluation.image import ImageEvalConfig, fid_from_features
from genloop.generation.image import save_grid
from genloop.hub.adapters import load_network
from genloop.models.family import CaptionRequest, Family, ImageRequest, Sampler, fast_bf16
from genloop.models.recogniser import Recogniser, RecogniserConfig, canonical, predict
from genloop.models.text_encoder import tokenize_prompts
from genloop.store import Store
from genloop.tokenizers import Tokenizer

# each relation's inverse: "x left of y" describes the same picture as "y right of x"
INVERSE_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


class ImageTextEvalConfig(ImageEvalConfig):
    """How a model of image_text data is judged (``eval:`` in its recipe)."""

    kind: Literal["image_text"] = "image_text"  # type: ignore[assignment]
    num_samples: int = Field(500, ge=0, le=100_000, description="test prompts (or images) judged, "
                             "spread over the test split (half of it held-out compositions)")
    paraphrased: bool = Field(False, description="text → image: also judge each prompt in a "
                              "phrasing never used in training")
    recogniser: str | None = Field(None, description="recogniser name@N that reads the attributes; "
                                   "None: the dataset's own (trained on first use)")
    recogniser_steps: int = Field(1500, ge=1, le=1_000_000, description="steps to train that recogniser")
    max_new_tokens: int = Field(32, ge=1, le=512, description="captions: tokens at most")
    num_beams: int = Field(1, ge=1, le=16, description="captions: beam width (1: greedy)")
    temperature: float = Field(0.0, ge=0.0, le=5.0, description="captions: 0 is greedy")


# --- pure metrics ---------------------------------------------------------------------------------


def swap_spec(schema: dict[str, Any]) -> dict[str, Any]:
    """The recogniser's swap fields for an attribute schema: with a ``relation`` slot and slots
    ``<x>1`` / ``<x>2``, the permutation exchanging the two objects and each relation's inverse;
    otherwise none (``swap_slot`` −1)."""
    names, values = list(schema["names"]), [list(v) for v in schema["values"]]
    if "relation" not in names:
        return {"swap_slots": (), "swap_slot": -1, "swap_values": ()}
    r = names.index("relation")
    perm = []
    for n in names:
        other = n[:-1] + {"1": "2", "2": "1"}[n[-1]] if n[-1:] in ("1", "2") else n
        if other not in names:
            raise InvalidInput(f"attribute schema: {n!r} has no partner {other!r} to exchange with")
        perm.append(names.index(other))
    try:
        inverse = tuple(values[r].index(INVERSE_RELATIONS[v]) for v in values[r])
    except (KeyError, ValueError):
        raise InvalidInput(f"attribute schema: relations {values[r]} are not closed under "
                           f"inversion ({INVERSE_RELATIONS})") from None
    return {"swap_slots": tuple(perm), "swap_slot": r, "swap_values": inverse}


def canonical_ids(attributes: np.ndarray, schema: dict[str, Any]) -> np.ndarray:
    """Attribute ids (N, A) in the canonical form of their scene (see ``swap_spec``)."""
    spec = RecogniserConfig(attribute_sizes=tuple(len(v) for v in schema["values"]), **swap_spec(schema))
    return canonical(spec, torch.as_tensor(np.asarray(attributes, dtype=np.int64))).numpy()


def faithfulness(read: np.ndarray, want: np.ndarray, names: Sequence[str],
                 heldout: np.ndarray | None = None, prefix: str = "") -> dict[str, float]:
    """Share of rows whose every present slot (``want`` >= 0) was read back (``read``, (N, A)),
    overall and on seen / held-out rows; and each slot's accuracy (``<prefix><name>_accuracy``)."""
    read, want = np.asarray(read), np.asarray(want)
    if read.shape != want.shape or read.ndim != 2 or len(names) != read.shape[1]:
        raise InvalidInput(f"faithfulness: read {read.shape}, wanted {want.shape}, {len(names)} names")
    if len(read) == 0:
        return {}
    hit = (read == want) | (want < 0)
    ok = hit.all(axis=1)
    out = {f"{prefix}faithfulness": float(ok.mean())}
    if heldout is not None:
        heldout = np.asarray(heldout, dtype=bool)
        for label, rows in (("seen", ~heldout), ("heldout", heldout)):
            if rows.any():
                out[f"{prefix}faithfulness_{label}"] = float(ok[rows].mean())
    for a, name in enumerate(names):
        present = want[:, a] >= 0
        if present.any():
            out[f"{prefix}{name}_accuracy"] = float(hit[present, a].mean())
    return out


def scene_ids(texts: Sequence[str], width: int) -> np.ndarray:
    """Attribute ids (N, width) of sentences parsed back (``scenes.parse``); a sentence that
    does not parse, or parses to a scene of another kind, gets −2 everywhere (never a match)."""
    out = np.full((len(texts), width), -2, dtype=np.int64)
    for i, t in enumerate(texts):
        scene = scenes.parse(t)
        if scene is not None:
            ids = scenes.attribute_ids(scene)
            if len(ids) == width:
                out[i] = ids
    return out


def read_back(texts: Sequence[str], schema: dict[str, Any]) -> np.ndarray:
    """Canonical attribute ids (N, A) of sentences parsed back; −2 throughout where one did not parse."""
    ids = scene_ids(texts, len(schema["names"]))
    unparsed = ids[:, 0] == -2
    out = canonical_ids(np.maximum(ids, -1), schema)
    out[unparsed] = -2
    return out


def diversity(captions: Sequence[str]) -> float:
    """Distinct captions / captions (after normalising): 1/N for one sentence said every time."""
    return len({normalise(c) for c in captions}) / max(len(captions), 1)


def normalise(text: str) -> str:
    """Lower case, punctuation out, single spaces: what PTBTokenizer would feed the scorers."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def bleu_cider(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Corpus BLEU-1..4 (Papineni et al. 2002, closest reference length) and CIDEr-D (Vedantam
    et al. 2015) of each candidate against its references, with pycocoevalcap's scorers."""
    from pycocoevalcap.bleu.bleu import Bleu  # type: ignore[import-untyped]
    from pycocoevalcap.cider.cider import Cider  # type: ignore[import-untyped]

    if len(candidates) != len(references) or not candidates:
        raise InvalidInput(f"BLEU/CIDEr: {len(candidates)} candidates for {len(references)} reference sets")
    if any(not refs for refs in references):
        raise InvalidInput("BLEU/CIDEr: every candidate needs at least one reference")
    res = {i: [normalise(c) or "<empty>"] for i, c in enumerate(candidates)}
    gts = {i: [normalise(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {"bleu1": float(bleu[0]), "bleu4": float(bleu[3]), "cider": float(cider)}


# --- the recogniser -------------------------------------------------------------------------------


def load_recogniser(store: Store, dataset: Any, ref: str | None = None) -> Recogniser | None:
    """The recogniser of ``dataset``: ``ref`` if given, else the newest ``<dataset>-recogniser``
    version (trained on every composition of the dataset's source, so its training content is
    not the judged model's: it is found by name, and its schema and image shape are checked);
    None if there is none yet."""
    if ref is None:
        name = f"{dataset.name}-recogniser"
        mine = [v for v in store.list_models() if v.name == name]
        if not mine:
            return None
        ref = max(mine, key=lambda v: v.version).ref
    version = store.resolve(ref)
    family, config, model = load_network(version, store)
    if not isinstance(model, Recogniser):
        raise RecipeError(f"eval.recogniser {ref} is a {family.name}, not a recogniser")
    sizes = tuple(len(v) for v in (dataset.schema or {}).get("values", []))
    c = cast(RecogniserConfig, config)
    if c.attribute_sizes != sizes or (c.channels, c.image_size) != (dataset.channels, dataset.image_size):
        raise RecipeError(f"recogniser {ref} reads attributes {list(c.attribute_sizes)} of "
                          f"{c.channels}×{c.image_size}² images; dataset {dataset.name} has "
                          f"{list(sizes)} of {dataset.channels}×{dataset.image_size}²")
    return model.eval()


def _real(dataset: Any, idx: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(dataset.test[idx])).float().div(127.5).sub(1.0)


def _spread(n: int, total: int) -> np.ndarray:
    return np.unique(np.linspace(0, total - 1, min(n, total)).round().astype(np.int64))


def _needs_schema(dataset: Any) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    if getattr(dataset, "schema", None) is None or dataset.attributes is None:
        raise RecipeError(f"dataset {dataset.name} has no attribute schema: faithfulness and caption "
                          "accuracy need a world whose truth is known (shapes, shapes-pairs)")
    return list(dataset.schema["names"]), np.asarray(dataset.attributes["test"]), dataset.test_heldout


def evaluate_recogniser(model: Recogniser, dataset: Any, batch_size: int = 256) -> dict[str, float]:
    """A recogniser's accuracy on every real test image: per attribute, per image, held-out too."""
    names, want, heldout = _needs_schema(dataset)
    read, _ = predict(model, _real(dataset, np.arange(len(want))), batch_size)
    m = faithfulness(read.numpy(), canonical_ids(want, dataset.schema), names, heldout)
    return {"test_accuracy": m.pop("faithfulness"),
            **{k.replace("faithfulness_", "test_accuracy_"): v for k, v in m.items()}}


# --- text → image ---------------------------------------------------------------------------------


def draw(family: Family, model: torch.nn.Module, config: Any, tokenizer: Tokenizer, prompts: Sequence[str],
         *, seed: int, steps: int | None = None, sampler: Sampler = "ddim",
         guidance_scale: float = 1.0, batch_size: int = 100, bf16: bool = False) -> torch.Tensor:
    """One image per prompt (N, C, H, W) in [-1, 1]; image i drawn from its own generator
    (``seed`` + i), so it does not depend on the batch it was drawn in."""
    out = []
    max_tokens = config.text_encoder.max_tokens
    for start in range(0, len(prompts), batch_size):
        part = list(prompts[start:start + batch_size])
        ids, mask = tokenize_prompts(tokenizer, part, max_tokens)
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + start + j) for j in range(len(part))]
        req = ImageRequest(num_samples=len(part), steps=steps, sampler=sampler,
                           guidance_scale=guidance_scale, prompt_ids=ids, prompt_mask=mask)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out.append(family.sample(model, req, gens).float().clamp(-1, 1))
    return torch.cat(out) if out else torch.zeros(0)


def paraphrase(text: str, k: int) -> str:
    """Phrasing ``k`` (cycling) of the scene of ``text`` among those never used in training."""
    scene = scenes.parse(text)
    if scene is None:
        raise InvalidInput(f"paraphrase: {text!r} does not describe a shapes scene")
    options = scenes.paraphrases(scene)
    return options[k % len(options)]


def evaluate_text_to_image(family: Family, model: torch.nn.Module, config: Any, dataset: Any,
                           cfg: ImageTextEvalConfig, recogniser: Recogniser, *, seed: int,
                           bf16: bool = False) -> tuple[dict[str, float], torch.Tensor]:
    """Faithfulness (seen / held-out, per attribute; paraphrased too if asked) of one image per
    test prompt, their FID against as many real test images, sampling speed; and the images."""
    names, want_all, heldout_all = _needs_schema(dataset)
    idx = _spread(cfg.num_samples, len(want_all))
    want = canonical_ids(want_all[idx], dataset.schema)
    heldout = None if heldout_all is None else np.asarray(heldout_all)[idx]
    prompts = [dataset.captions["test"][i] for i in idx]
    opts = dict(steps=cfg.steps, sampler=cfg.sampler, guidance_scale=cfg.guidance_scale,
                batch_size=cfg.batch_size, bf16=bf16)
    t0 = time.perf_counter()
    fake = draw(family, model, config, dataset.tokenizer, prompts, seed=seed, **opts)  # type: ignore[arg-type]
    metrics = {"sample_images_per_s": len(fake) / max(time.perf_counter() - t0, 1e-9)}
    read, f_fake = predict(recogniser, fake, cfg.batch_size)
    metrics.update(faithfulness(read.numpy(), want, names, heldout))
    _, f_real = predict(recogniser, _real(dataset, idx), cfg.batch_size)
    if len(idx) >= 2:
        metrics["fid"] = fid_from_features(f_real, f_fake)
    metrics["eval_images"] = float(len(idx))
    if cfg.paraphrased:
        texts = [paraphrase(p, k) for k, p in enumerate(prompts)]
        para = draw(family, model, config, dataset.tokenizer, texts, seed=seed, **opts)  # type: ignore[arg-type]
        read_p, _ = predict(recogniser, para, cfg.batch_size)
        metrics.update(faithfulness(read_p.numpy(), want, names, heldout, prefix="paraphrased_"))
    return metrics, fake


# --- image → text ---------------------------------------------------------------------------------


def caption(family: Family, model: torch.nn.Module, tokenizer: Tokenizer, images: torch.Tensor, *,
            seed: int, max_new_tokens: int = 32, num_beams: int = 1, temperature: float = 0.0,
            batch_size: int = 100) -> list[str]:
    """A caption of each image (N, C, H, W) in [-1, 1]; image i's from its own generator."""
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        part = images[start:start + batch_size]
        gens = [torch.Generator().manual_seed(seed * 1_000_003 + start + j) for j in range(len(part))]
        req = CaptionRequest(images=part, max_new_tokens=max_new_tokens, temperature=temperature,
                             num_beams=num_beams)
        with torch.no_grad():
            out += [tokenizer.decode(ids) for ids in family.sample(model, req, gens)]
    return out


def caption_scores(captions: Sequence[str], want: np.ndarray, schema: dict[str, Any],
                   heldout: np.ndarray | None, references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Exact attribute accuracy of captions parsed back (per attribute, whole caption, seen /
    held-out), their diversity, BLEU-4 and CIDEr against ``references``."""
    names = list(schema["names"])
    read = read_back(captions, schema)
    m = faithfulness(read, canonical_ids(want, schema), names, heldout)
    out = {k.replace("faithfulness", "caption_accuracy"): v for k, v in m.items()}
    out["parsed"] = float((read[:, 0] != -2).mean()) if len(read) else 0.0
    out["diversity"] = diversity(captions)
    return {**out, **bleu_cider(captions, references)}


def evaluate_captioner(family: Family, model: torch.nn.Module, dataset: Any, cfg: ImageTextEvalConfig,
                       *, seed: int) -> tuple[dict[str, float], list[str]]:
    """Caption metrics on test images spread over the split (seen and held-out compositions)."""
    _, want_all, heldout_all = _needs_schema(dataset)
    idx = _spread(cfg.num_samples, len(want_all))
    t0 = time.perf_counter()
    captions = caption(family, model, dataset.tokenizer, _real(dataset, idx), seed=seed,
                       max_new_tokens=cfg.max_new_tokens, num_beams=cfg.num_beams,
                       temperature=cfg.temperature, batch_size=cfg.batch_size)
    speed = len(captions) / max(time.perf_counter() - t0, 1e-9)
    heldout = None if heldout_all is None else np.asarray(heldout_all)[idx]
    refs = [dataset.references("test", int(i)) for i in idx]
    metrics = caption_scores(captions, want_all[idx], dataset.schema, heldout, refs)
    return {**metrics, "captions_per_s": speed, "eval_images": float(len(idx))}, captions


def round_trip(t2i: tuple[Family, torch.nn.Module, Any, Tokenizer],
               captioner: tuple[Family, torch.nn.Module, Tokenizer], prompts: Sequence[str],
               schema: dict[str, Any], *, seed: int = 0, heldout: np.ndarray | None = None,
               guidance_scale: float = 3.0, steps: int | None = None,
               batch_size: int = 100) -> tuple[dict[str, float], list[str]]:
    """caption(generate(prompt)) parsed back against the prompt: the share whose every attribute
    survives both models (and per attribute); the captions."""
    family, model, config, tokenizer = t2i
    images = draw(family, model, config, tokenizer, prompts, seed=seed, steps=steps,
                  guidance_scale=guidance_scale, batch_size=batch_size)
    c_family, c_model, c_tokenizer = captioner
    captions = caption(c_family, c_model, c_tokenizer, images, seed=seed, batch_size=batch_size)
    m = faithfulness(read_back(captions, schema), read_back(prompts, schema), list(schema["names"]),
                     heldout)
    return {k.replace("faithfulness", "round_trip"): v for k, v in m.items()}, captions


# --- the loop's final evaluation ------------------------------------------------------------------


def evaluate(family: Family, model: torch.nn.Module, model_config: Any, dataset: Any,
             config: ImageTextEvalConfig, *, seed: int, context: Any) -> tuple[dict[str, float], list[str]]:
    """The loop's final evaluation of a model trained on image_text data, by what it is: a
    recogniser (its accuracies), a text-conditioned generator (faithfulness, FID; the recogniser
    from ``context.recogniser()``, trained on first use), a captioner (caption metrics), or a
    class-conditional / unconditional image model (the images evaluation, unchanged)."""
    if not family.generative and isinstance(model, Recogniser):
        return evaluate_recogniser(model, dataset, config.batch_size), []
    judge = _BY_CONDITIONING.get(family.conditioning)
    if judge is None:
        return image.evaluate(family, model, model_config, dataset, config, seed=seed, context=context)
    if not config.num_samples:
        return {}, []
    return judge(family, model, model_config, dataset, config, seed, context)


def _judge_captioner(family: Family, model: torch.nn.Module, model_config: Any, dataset: Any,
                     config: ImageTextEvalConfig, seed: int, context: Any
                     ) -> tuple[dict[str, float], list[str]]:
    metrics, captions = evaluate_captioner(family, model, dataset, config, seed=seed)
    path = Path(context.run_dir) / "captions.txt"
    path.write_text("\n".join(captions) + "\n", encoding="utf-8")
    return metrics, [str(path)]


def _judge_text_to_image(family: Family, model: torch.nn.Module, model_config: Any, dataset: Any,
                         config: ImageTextEvalConfig, seed: int, context: Any
                         ) -> tuple[dict[str, float], list[str]]:
    recogniser = context.recogniser()
    if recogniser is None:
        raise RecipeError(f"no recogniser for dataset {dataset.name}: set eval.recogniser name@N")
    bf16 = fast_bf16("cpu") if context.bf16 is None else context.bf16
    metrics, fake = evaluate_text_to_image(family, model, model_config, dataset, config, recogniser,
                                           seed=seed, bf16=bf16)
    if not config.grid:
        return metrics, []
    context.grid = save_grid(fake[: config.grid], Path(context.run_dir) / "samples.png")
    return metrics, [str(context.grid)]


# what a family of image_text data is conditioned on decides how it is judged; others: as images
_BY_CONDITIONING = {"image": _judge_captioner, "text": _judge_text_to_image}




def evaluate_ref(ref: str, store: Store | None = None, **options: Any) -> dict[str, float]:
    """Judge a registered text → image model or captioner again on its own dataset, with eval
    ``options`` (``guidance_scale``, ``num_samples``, ``paraphrased``, ``recogniser`` ...); the
    version's record is left as it is (a sweep, not its evaluation)."""
    from genloop.data.image_text import load_image_text_dataset
    from genloop.models.modeldir import ModelDir

    store = store or Store()
    version = store.resolve(ref)
    family, config, model = load_network(version, store)
    model.eval()
    dataset = load_image_text_dataset(store.get_dataset(ModelDir(Path(version.path)).lineage()
                                                        ["dataset_hash"]).path)
    cfg = ImageTextEvalConfig(**options)
    if family.conditioning not in _BY_CONDITIONING:
        raise InvalidInput(f"{version.ref} is a {family.name}: only text → image models and "
                           "captioners are judged on image_text data here")
    if _BY_CONDITIONING[family.conditioning] is _judge_captioner:
        return evaluate_captioner(family, model, dataset, cfg, seed=0)[0]
    recogniser = load_recogniser(store, dataset, cfg.recogniser)
    if recogniser is None:
        raise InvalidInput(f"no recogniser for dataset {dataset.name}: pass recogniser=name@N")
    return evaluate_text_to_image(family, model, config, dataset, cfg, recogniser, seed=0)[0]


__all__ = ["ImageTextEvalConfig", "bleu_cider", "canonical_ids", "caption", "caption_scores", "diversity",
           "draw", "evaluate", "evaluate_ref", "faithfulness", "load_recogniser", "round_trip", "swap_spec"]
