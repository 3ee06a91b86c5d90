"""The moderation classifier: trained by genloop on the workspace's own labelled examples.

A JSONL file of ``{"text": ..., "label": ...}`` (any labels, at least two) trains a linear
classifier over hashed character n-grams (1 to 4 characters of the folded text, with word
edges marked): scripts with and without spaces alike, no tokenizer (the fastText-style baseline
of Joulin et al. 2017, "Bag of Tricks for Efficient Text Classification", with characters instead
of words), fitted as an L2-penalised, class-weighted logistic regression (scikit-learn) on the
n-grams the examples use: a fraction of a second on a CPU for a few hundred examples. It is registered
as a model version of family ``moderation`` (``genloop moderation train FILE --name NAME``) —
weights as safetensors, its settings in the version's config, its labels, lineage and card — and
named in the policy's ``classifier``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from genloop.atomic import atomic_write_json
from genloop.config import settings
from genloop.errors import CorruptArtifact, InvalidInput, NotFound
from genloop.models.io import read_safetensors
from genloop.models.modeldir import ModelDir
from genloop.safety.matching import fold
from genloop.store import ModelVersion, Store

FAMILY = "moderation"
MAX_EXAMPLES = 200_000


@dataclass
class TextClassifier:
    labels: list[str]
    weight: torch.Tensor  # (buckets, L)
    bias: torch.Tensor  # (L,)
    ngrams: int = 4

    @property
    def buckets(self) -> int:
        return int(self.weight.shape[0])

    def features(self, text: str) -> list[int]:
        """Bucket ids of the folded text's character n-grams (space-separated words get edge
        marks, so "kill" and "skill" share only some of theirs)."""
        s = "\x02" + " ".join(fold(text)[0].split()) + "\x03"
        ids = [zlib.crc32(s[i : i + n].encode()) % self.buckets
               for n in range(1, self.ngrams + 1) for i in range(len(s) - n + 1)]
        return ids or [0]

    def bags(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The texts' n-gram ids, bag offsets and weights (1/count: each text's mean)."""
        feats = [self.features(t) for t in texts]
        ids = torch.tensor([i for f in feats for i in f], dtype=torch.long)
        offsets = torch.tensor([0] + [len(f) for f in feats[:-1]]).cumsum(0)
        weights = torch.tensor([1.0 / len(f) for f in feats for _ in f])
        return ids, offsets, weights

    def logits(self, texts: list[str],
               bags: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, L) logits: the mean of each text's n-gram weights, plus the bias."""
        ids, offsets, weights = bags or self.bags(texts)
        return F.embedding_bag(ids, self.weight, offsets, mode="sum",
                               per_sample_weights=weights) + self.bias

    def scores(self, texts: list[str]) -> list[dict[str, float]]:
        """Each text's probability of every label."""
        if not texts:
            return []
        with torch.no_grad():
            probs = self.logits(texts).softmax(-1)
        return [dict(zip(self.labels, row.tolist(), strict=True)) for row in probs]


def read_examples(path: Path) -> list[tuple[str, str]]:
    """(text, label) of each line of a JSONL file; ``FILE:LINE: what is wrong`` otherwise."""
    examples = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"{path}: cannot read the examples ({e})") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidInput(f"{path}:{n}: not JSON ({e.msg})") from None
        if not isinstance(record, dict) or set(record) - {"text", "label"}:
            raise InvalidInput(f"{path}:{n}: give an object with keys text and label only")
        text, label = record.get("text"), record.get("label")
        if not isinstance(text, str) or not text.strip():
            raise InvalidInput(f"{path}:{n}: text must be a non-empty string")
        if not isinstance(label, str) or not label.strip():
            raise InvalidInput(f"{path}:{n}: label must be a non-empty string")
        examples.append((text, label.strip()))
    if len(examples) > MAX_EXAMPLES:
        raise InvalidInput(f"{path}: at most {MAX_EXAMPLES} examples, not {len(examples)}")
    if len({label for _, label in examples}) < 2:
        raise InvalidInput(f"{path}: the examples need at least two different labels")
    return examples


def train_classifier(examples: list[tuple[str, str]], *, steps: int = 100, l2: float = 1e-3,
                     buckets: int = 1 << 16) -> TextClassifier:
    """Logistic regression with an L2 penalty, class-weighted (a rare "blocked" label must not
    drown in ordinary examples), fitted full-batch by scikit-learn's L-BFGS (``steps``
    iterations at most) from zero weights: convex, so deterministic, no seed needed. The
    objective is the class-weighted mean cross-entropy plus ``l2``/2 · |W|² (scikit-learn's
    ``C`` = 1 / (examples · l2)); the bias is not penalised.

    Only the buckets some training text uses can move from zero, so the fit runs on those
    columns alone — a sparse (texts × n-grams used) matrix, not the whole bucket table — and
    the weights are scattered back into the table at the end: well under a second for a few
    hundred examples, the same classifier the table would give."""
    import warnings

    import numpy as np
    from scipy.sparse import csr_matrix
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    labels = sorted({label for _, label in examples})
    probe = TextClassifier(labels, torch.zeros(buckets, 0), torch.zeros(0))
    feats = [probe.features(t) for t, _ in examples]
    used = sorted({i for f in feats for i in f})
    column = {bucket: j for j, bucket in enumerate(used)}
    rows, cols, vals = [], [], []
    for n, f in enumerate(feats):
        for bucket in f:  # repeated n-grams add up: the mean of the text's n-gram weights
            rows.append(n)
            cols.append(column[bucket])
            vals.append(1.0 / len(f))
    x = csr_matrix((vals, (rows, cols)), shape=(len(feats), len(used)), dtype=np.float64)
    target = np.array([labels.index(label) for _, label in examples])
    # two classes are one logit z = z₁ - z₀ in scikit-learn, penalised |w|²/2 where the two
    # columns' symmetric optimum (±w/2) costs |w|²/4: hence C twice as large for the same fit
    strength = 2.0 if len(labels) == 2 else 1.0
    fit = LogisticRegression(C=strength / (len(examples) * l2), class_weight="balanced",
                             solver="lbfgs", max_iter=steps, tol=1e-7)
    with warnings.catch_warnings():  # ``steps`` is a budget: stopping at it is not an error
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit.fit(x, target)
    coef, intercept = fit.coef_.T, fit.intercept_
    if len(labels) == 2:  # scikit-learn fits one logit for two classes: softmax([0, z]) = σ(z)
        coef = np.concatenate([np.zeros_like(coef), coef], axis=1)
        intercept = np.array([0.0, intercept[0]])
    table = torch.zeros(buckets, len(labels))
    table[torch.tensor(used)] = torch.from_numpy(coef).float()
    return TextClassifier(labels, table, torch.from_numpy(intercept).float().clone())


def cross_validated(examples: list[tuple[str, str]], folds: int = 5, **train: Any) -> float:
    """Held-out accuracy: each example scored by a classifier trained on the other folds
    (example i in fold i mod ``folds``)."""
    right = 0
    for k in range(folds):
        model = train_classifier([e for i, e in enumerate(examples) if i % folds != k], **train)
        test = [e for i, e in enumerate(examples) if i % folds == k]
        right += round(accuracy(model, test) * len(test))
    return right / len(examples)


def accuracy(model: TextClassifier, examples: list[tuple[str, str]]) -> float:
    scores = model.scores([t for t, _ in examples])
    right = sum(max(s, key=s.__getitem__) == label for s, (_, label) in zip(scores, examples,
                                                                            strict=True))
    return right / max(1, len(examples))


def register_classifier(store: Store, name: str, model: TextClassifier, examples_sha256: str,
                        metrics: dict[str, float], *, examples: str | None = None,
                        training: dict[str, Any] | None = None) -> ModelVersion:
    """Write the classifier as a model directory — weights, config, labels, lineage (the
    examples file and its hash, how it was trained) — register it as version N of ``name``,
    then write its card."""
    settings().models_dir.mkdir(parents=True, exist_ok=True)
    staged = ModelDir(Path(tempfile.mkdtemp(prefix=".staged-", dir=settings().models_dir)))
    lineage = {"dataset": examples, "dataset_hash": examples_sha256, "parent": None,
               "trained_by": "genloop moderation train", "training": training or {}}
    try:
        save_file({"weight": model.weight.contiguous(), "bias": model.bias.contiguous()},
                  str(staged.weights_file))
        atomic_write_json(staged.config_file, {"family": FAMILY, "ngrams": model.ngrams,
                                               "buckets": model.buckets})
        staged.write_labels(model.labels)
        atomic_write_json(staged.lineage_file, lineage)
        version = store.register_model(name, staged.path, family=FAMILY,
                                       dataset_hash=examples_sha256, metrics=metrics)
    except BaseException:
        shutil.rmtree(staged.path, ignore_errors=True)
        raise
    ModelDir(Path(version.path)).write_card(card(version.ref, model, metrics, lineage))
    return version


def card(ref: str, model: TextClassifier, metrics: dict[str, float],
         lineage: dict[str, Any]) -> str:
    """The classifier's model card: what it is, what it was trained on, how well it does."""
    figures = []
    if "heldout_accuracy" in metrics:
        figures.append(f"- held-out accuracy: {metrics['heldout_accuracy']:.3f} "
                       f"({int(metrics.get('folds', 0))}-fold cross-validation)")
    if "train_accuracy" in metrics:
        figures.append(f"- training accuracy: {metrics['train_accuracy']:.3f}")
    if "examples" in metrics:
        figures.append(f"- examples: {int(metrics['examples'])}")
    name = ref.split("@")[0]
    return (f"# {ref}\n\nA moderation classifier trained by genloop (`{lineage['trained_by']}`): "
            f"a linear model over hashed character 1–{model.ngrams}-grams of folded text "
            f"({model.buckets} buckets), labels {', '.join(model.labels)}.\n\n"
            f"It does not generate text: name it in `moderation.yaml` (`classifier: {{model: "
            f"{name}, labels: [{model.labels[-1]}]}}`), where it checks prompts and outputs.\n\n"
            f"## Figures\n\n" + ("\n".join(figures) or "- none measured") + "\n\n"
            f"## Lineage\n\n- examples: `{lineage.get('dataset')}` "
            f"`{lineage['dataset_hash']}`\n- training: `{json.dumps(lineage['training'])}`\n")


def load_classifier(store: Store, ref: str) -> tuple[ModelVersion, TextClassifier]:
    try:
        version = store.resolve(ref)
    except NotFound as e:
        raise InvalidInput(f"classifier.model: {e}") from None
    if version.family != FAMILY:
        raise InvalidInput(f"classifier.model: {version.ref} is a {version.family} model, not a "
                           "moderation classifier (train one with genloop moderation train)")
    directory = ModelDir(Path(version.path))
    try:
        config = json.loads(directory.config_file.read_text())
        labels = directory.labels()
    except (OSError, ValueError) as e:
        raise CorruptArtifact(f"{directory.path}: unreadable classifier ({e})") from None
    tensors = read_safetensors(directory.weights_file)
    weight, bias = tensors.get("weight"), tensors.get("bias")
    if (weight is None or bias is None or not labels or weight.shape != (config["buckets"], len(labels))
            or bias.shape != (len(labels),) or not torch.isfinite(weight).all()):
        raise CorruptArtifact(f"{directory.weights_file}: not this classifier's weights")
    return version, TextClassifier(list(labels), weight, bias, int(config["ngrams"]))


def file_sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()

