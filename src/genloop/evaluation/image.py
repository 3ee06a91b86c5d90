"""Image evaluation: distances between feature distributions, and scores of class predictions.

Every metric here is a pure function of arrays — features (N, D) of real and generated images
from the ``classifier`` family's penultimate layer, or its class probabilities (N, K) — computed
in float64 NumPy, so the same numbers come out of the CLI, training-time evaluation and benches.

- FID, Fréchet Inception Distance (Heusel et al. 2017): the Fréchet (2-Wasserstein) distance
  between Gaussians fitted to the two feature sets,
  ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``. The trace of the square root is taken
  from the eigenvalues of the symmetric ``S1^(1/2) S2 S1^(1/2)`` (same spectrum as ``S1 S2``),
  which avoids the complex, ill-conditioned ``sqrtm`` of a non-symmetric product.
- KID, Kernel Inception Distance (Bińkowski et al. 2018): the unbiased estimate of MMD² with the
  cubic polynomial kernel ``k(x, y) = (x·y / d + 1)^3``, averaged over random subsets. Unbiased, so
  two samples of one distribution give ≈ 0 (it can be slightly negative), even for small N.
- Improved precision and recall (Kynkäänniemi et al. 2019): the real manifold is the union of
  balls around each real feature with radius its distance to its k-th nearest real neighbour;
  precision is the share of fakes inside it, recall the share of reals inside the fake manifold.
- Inception Score (Salimans et al. 2016): ``exp(E_x KL(p(y|x) || p(y)))`` per split, mean and std.
- Class accuracy: how often the classifier recognises the class a conditional model was asked for.

The numbers depend on the feature extractor: our FID is "FID under genloop's classifier", comparable
between models scored with the same classifier version, not with published Inception-v3 FIDs.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from genloop.errors import InvalidInput, RecipeError
from genloop.generation.image import save_grid
from genloop.hub.adapters import load_network
from genloop.models.family import Family, ImageBatch, ImageModelConfig, ImageRequest, Sampler, fast_bf16
from genloop.store import Store

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(x: ArrayLike, name: str, *, ndim: int = 2, min_rows: int = 1) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != ndim:
        raise InvalidInput(f"{name}: expected a {ndim}-d array, got shape {tuple(x.shape)}")
    if x.shape[0] < min_rows:
        raise InvalidInput(f"{name}: needs at least {min_rows} rows, got {x.shape[0]}")
    if not np.isfinite(x).all():
        raise InvalidInput(f"{name}: contains NaN or infinite values")
    return x


def _same_width(real: np.ndarray, fake: np.ndarray) -> None:
    if real.shape[1] != fake.shape[1]:
        raise InvalidInput(f"real and fake features differ in width: {real.shape[1]} vs {fake.shape[1]}")


# --- FID ------------------------------------------------------------------------------------------


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix (rounding negatives clipped to 0)."""
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def trace_sqrt_product(s1: np.ndarray, s2: np.ndarray) -> float:
    """tr((S1 S2)^(1/2)) for covariance matrices: the eigenvalues of S1 S2 are those of the
    symmetric PSD matrix S1^(1/2) S2 S1^(1/2), so their square roots sum to the trace."""
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    m = (m + m.T) / 2  # symmetric up to rounding; make it exactly so for eigvalsh
    return float(np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum())


def frechet_distance(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, S1) and N(mu2, S2) (Dowson & Landau 1982)."""
    diff = mu1 - mu2
    d = float(diff @ diff) + float(np.trace(s1)) + float(np.trace(s2)) - 2.0 * trace_sqrt_product(s1, s2)
    return max(d, 0.0)  # a distance; rounding can leave -1e-12 when the two sets coincide


def fid_from_features(real: ArrayLike, fake: ArrayLike) -> float:
    """FID between feature sets ``real`` (N, D) and ``fake`` (M, D); sample covariances (ddof=1)."""
    real = _as_float64(real, "real features", min_rows=2)
    fake = _as_float64(fake, "fake features", min_rows=2)
    _same_width(real, fake)
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1 = np.atleast_2d(np.cov(real, rowvar=False))
    s2 = np.atleast_2d(np.cov(fake, rowvar=False))
    return frechet_distance(mu1, s1, mu2, s2)


# --- KID ------------------------------------------------------------------------------------------


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x·y / d + 1)^3, the kernel of Bińkowski et al. 2018: (N, D), (M, D) -> (N, M)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² (Gretton et al. 2012, eq. 3): within-set kernel means leave out the diagonal."""
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    xx = (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
    yy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(xx + yy - 2.0 * kxy.mean())


def kid_from_features(
    real: ArrayLike, fake: ArrayLike, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID mean and std over ``subsets`` random subsets of ``subset_size`` rows of each set
    (drawn without replacement, the size capped at the smaller set); ``seed`` fixes the draw."""
    real = _as_float64(real, "real features", min_rows=2)
    fake = _as_float64(fake, "fake features", min_rows=2)
    _same_width(real, fake)
    if subsets < 1 or subset_size < 2:
        raise InvalidInput(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, real.shape[0], fake.shape[0])
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for i in range(subsets):
        x = real[rng.choice(real.shape[0], size, replace=False)]
        y = fake[rng.choice(fake.shape[0], size, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())


# --- precision and recall -------------------------------------------------------------------------


def _squared_distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """|a_i - b_j|^2 for a block of rows: (n, D), (m, D) -> (n, m), clipped at 0 against rounding."""
    d = (a * a).sum(axis=1)[:, None] - 2.0 * (a @ b.T) + b_sq[None, :]
    return np.clip(d, 0.0, None)


def knn_radii(features: np.ndarray, k: int, *, batch_size: int = 1000) -> np.ndarray:
    """Squared distance of each row to its k-th nearest other row, (N,). The row itself sits at
    distance 0 in its own distance row, so the k-th neighbour is the (k+1)-th smallest entry."""
    sq = (features * features).sum(axis=1)
    radii = np.empty(features.shape[0])
    for start in range(0, features.shape[0], batch_size):
        d = _squared_distances(features[start:start + batch_size], features, sq)
        radii[start:start + batch_size] = np.partition(d, k, axis=1)[:, k]
    return radii


def manifold_coverage(
    manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, *, batch_size: int = 1000
) -> float:
    """Share of ``queries`` inside at least one ball (manifold row, its radius)."""
    sq = (manifold * manifold).sum(axis=1)
    inside = 0
    for start in range(0, queries.shape[0], batch_size):
        d = _squared_distances(queries[start:start + batch_size], manifold, sq)  # (n, N)
        inside += int((d <= radii[None, :]).any(axis=1).sum())
    return inside / queries.shape[0]


def precision_recall(real: ArrayLike, fake: ArrayLike, *, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls.

    Distances are taken 1,000 rows at a time, so 10,000 x 10,000 needs ~80 MB, not ~800 MB.
    """
    real = _as_float64(real, "real features")
    fake = _as_float64(fake, "fake features")
    _same_width(real, fake)
    if not 1 <= k < min(real.shape[0], fake.shape[0]):
        raise InvalidInput(
            f"precision/recall: k={k} needs more than k samples in each set "
            f"(real {real.shape[0]}, fake {fake.shape[0]})"
        )
    precision = manifold_coverage(real, knn_radii(real, k), fake)
    recall = manifold_coverage(fake, knn_radii(fake, k), real)
    return precision, recall


# --- scores of class predictions ------------------------------------------------------------------


def inception_score(probs: ArrayLike, *, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016): mean and std over ``splits`` consecutive splits of
    ``probs`` (N, K) of ``exp(mean_x KL(p(y|x) || p(y)))``, with p(y) the split's mean prediction.
    It lies in [1, K]: 1 when every image gets the same prediction, K when predictions are
    confident and spread evenly over the K classes."""
    p = _as_float64(probs, "probabilities", min_rows=splits)
    if splits < 1:
        raise InvalidInput(f"inception score: splits must be >= 1, got {splits}")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-4):
        raise InvalidInput("inception score: each row of probs must be a probability vector (softmax output)")
    scores = []
    for part in np.array_split(p, splits):
        py = part.mean(axis=0, keepdims=True)
        # 0 · log 0 = 0; where p > 0, py > 0 too, since py averages rows including this one
        ratio = np.divide(part, py, out=np.ones_like(part), where=part > 0)
        kl = (part * np.log(ratio)).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def class_accuracy(predicted: ArrayLike, requested: ArrayLike) -> float:
    """Share of samples whose predicted class is the requested one. ``predicted`` is class ids
    (N,) or scores (N, K) — probabilities or logits, argmax taken; ``requested`` (N,) class ids."""
    pred = predicted.detach().cpu().numpy() if isinstance(predicted, torch.Tensor) else np.asarray(predicted)
    want = requested.detach().cpu().numpy() if isinstance(requested, torch.Tensor) else np.asarray(requested)
    if pred.ndim == 2:
        pred = pred.argmax(axis=1)
    if pred.ndim != 1 or want.ndim != 1 or pred.shape[0] != want.shape[0] or pred.shape[0] == 0:
        raise InvalidInput(
            f"class accuracy: expected (N,) or (N, K) predictions and (N,) labels, N > 0; "
            f"got {tuple(pred.shape)} and {tuple(want.shape)}"
        )
    return float((pred.astype(np.int64) == want.astype(np.int64)).mean())


# --- evaluation of a model ------------------------------------------------------------------------


class ImageEvalConfig(BaseModel):
    """How a trained image model is judged (``eval:`` in an image recipe)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["images"] = "images"
    num_samples: int = Field(1000, ge=0, le=100_000,
                             description="generated images compared with as many test images (0: skip)")
    batch_size: int = Field(250, ge=1, le=10_000, description="images per sampling batch")
    steps: int | None = Field(None, ge=1, le=10_000, description="diffusion steps (None: 50 DDIM / T DDPM)")
    sampler: Sampler = "ddim"
    guidance_scale: float = Field(1.0, ge=0.0, le=20.0, description="classifier-free guidance")
    importance_samples: int = Field(0, ge=0, le=100_000,
                                    description="VAE: importance samples per test image for the NLL (0: off)")
    nll_images: int = Field(1000, ge=1, le=100_000, description="VAE: test images for ELBO and NLL")
    grid: int = Field(64, ge=0, le=256, description="images in the card's sample grid")
    feature_extractor: str | None = Field(
        None, description="classifier name@N for FID/KID/PR; None: the dataset's own (trained on first use)"
    )
    extractor_steps: int = Field(1000, ge=1, le=1_000_000, description="steps to train that classifier")


def _spread(n: int, total: int) -> torch.Tensor:
    """``n`` indices spread evenly over ``total`` items (a fixed, label-balanced-enough subset)."""
    return torch.linspace(0, total - 1, min(n, total)).long()


def evaluate_images(
    family: Family, model: torch.nn.Module, config: ImageModelConfig, dataset: Any,
    cfg: ImageEvalConfig, *, seed: int, extractor: torch.nn.Module | None, bf16: bool | None = None,
) -> tuple[dict[str, float], torch.Tensor | None]:
    """Metrics of a trained image model on the dataset's test split, and a grid of samples.

    A generator is judged by its samples (FID, KID, precision/recall, Inception-style score and,
    when conditional, how often the extractor sees the requested class); a VAE also by its
    likelihood bounds; a classifier (the extractor itself) by its test accuracy. Sampling runs
    under bf16 autocast where the CPU has native bf16 (``bf16=None``), as training does; features
    and likelihoods are computed in fp32.
    """
    from genloop.models.classifier import Classifier, predict

    test = torch.from_numpy(np.array(dataset.test))
    test_labels = torch.from_numpy(np.array(dataset.test_labels, dtype=np.int64))
    real = test.float().div(127.5).sub(1.0)
    metrics: dict[str, float] = {}
    if not family.generative:
        _, probs = predict(cast(Classifier, model), real, cfg.batch_size)  # not generative: a classifier
        metrics["test_accuracy"] = class_accuracy(probs.argmax(1), test_labels)
        return metrics, None

    # 1. samples: classes in turn (balanced) for a conditional model, all from one seed
    use_bf16 = fast_bf16("cpu") if bf16 is None else bf16
    g = torch.Generator().manual_seed(seed + 7)
    n = cfg.num_samples
    conditional, num_classes = config.conditional, max(config.num_classes, 1)
    fakes, requested = [], []
    t0 = time.perf_counter()
    for start in range(0, max(n, cfg.grid), cfg.batch_size):
        b = min(cfg.batch_size, max(n, cfg.grid) - start)
        labels = (torch.arange(start, start + b) % num_classes) if conditional else None
        req = ImageRequest(num_samples=b, labels=labels, steps=cfg.steps, sampler=cfg.sampler,
                           guidance_scale=cfg.guidance_scale)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            fakes.append(family.sample(model, req, g).float())
        if labels is not None:
            requested.append(labels)
    elapsed = time.perf_counter() - t0
    fake = torch.cat(fakes)
    metrics["sample_images_per_s"] = len(fake) / max(elapsed, 1e-9)

    # 2. sample quality in the extractor's feature space, against as many test images
    if n and extractor is not None:
        idx = _spread(n, len(real))
        features = cast(Classifier, extractor)  # load_feature_extractor returns a classifier
        f_real, _ = predict(features, real[idx], cfg.batch_size)
        f_fake, p_fake = predict(features, fake[:n], cfg.batch_size)
        metrics["fid"] = fid_from_features(f_real, f_fake)
        metrics["kid"], metrics["kid_std"] = kid_from_features(f_real, f_fake, seed=seed)
        metrics["precision"], metrics["recall"] = precision_recall(f_real, f_fake)
        metrics["inception_score"], _ = inception_score(p_fake)
        if requested:
            metrics["sample_accuracy"] = class_accuracy(p_fake.argmax(1), torch.cat(requested)[:n])
        metrics["eval_images"] = float(len(idx))

    # 3. likelihood bounds (VAE): negative ELBO (k=1) and the importance-weighted NLL (k samples)
    if family.importance_nll is not None and cfg.importance_samples:
        idx = _spread(cfg.nll_images, len(real))
        nelbo, iw = [], []
        for i, start in enumerate(range(0, len(idx), 100)):
            part = idx[start : start + 100]
            batch = ImageBatch(real[part], test_labels[part], torch.Generator().manual_seed(seed + i))
            with torch.no_grad():
                nelbo.append(family.importance_nll(model, batch, 1))
                batch.generator = torch.Generator().manual_seed(seed + 100_003 + i)
                iw.append(family.importance_nll(model, batch, cfg.importance_samples))
        metrics["test_nelbo_nats"] = float(torch.cat(nelbo).mean())
        metrics["test_iw_nll_nats"] = float(torch.cat(iw).mean())
    return metrics, (fake[: cfg.grid] if cfg.grid else None)


def load_feature_extractor(store: Store, dataset: Any, ref: str | None = None) -> torch.nn.Module | None:
    """The classifier behind FID/KID/PR for ``dataset``: ``ref`` if given, else the newest
    ``<dataset>-features`` version trained on this very content (same hash); None if there is none.

    Rows of a comparison share one extractor this way; ``training/features.py`` trains and
    registers it on first use."""
    if ref is None:
        name = f"{dataset.name}-features"
        mine = [v for v in store.list_models() if v.name == name and v.dataset_hash == dataset.hash]
        if not mine:
            return None
        ref = max(mine, key=lambda v: v.version).ref
    version = store.resolve(ref)
    family, loaded, model = load_network(version, store)  # full weights, or an adapter over its base
    config = cast(ImageModelConfig, loaded)  # an extractor is the (image) classifier family
    if family.generative or (config.channels, config.image_size) != (dataset.channels, dataset.image_size):
        raise RecipeError(
            f"feature extractor {ref} is a {family.name} for {config.channels}×{config.image_size}"
            f"×{config.image_size} images; this dataset needs a classifier for {dataset.channels}×"
            f"{dataset.image_size}×{dataset.image_size}"
        )
    return model


def evaluate(family: Family, model: torch.nn.Module, model_config: Any, dataset: Any,
             config: ImageEvalConfig, *, seed: int, context: Any) -> tuple[dict[str, float], list[str]]:
    """The loop's final evaluation of an image model (``evaluation/kinds.py``): samples scored in
    the features of the dataset's extractor (``context.extractor()`` trains one on first use),
    the grid written to ``context.run_dir/samples.png`` (and named in ``context.grid``)."""
    extractor = context.extractor() if family.generative and config.num_samples else None
    metrics, grid = evaluate_images(family, model, model_config, dataset, config, seed=seed,
                                    extractor=extractor, bf16=context.bf16)
    if grid is None:
        return metrics, []
    context.grid = save_grid(grid, Path(context.run_dir) / "samples.png")
    return metrics, [str(context.grid)]
