"""The moderation classifier: trained by genloop on the workspace's own labelled examples.

A JSONL file of ``{"text": ..., "label": ...}`` (any labels, at least two) trains a linear
classifier over hashed character n-grams (1 to 4 characters of the folded text, with word
edges marked): scripts with and without spaces alike, no tokenizer, trained in seconds on a CPU
(the fastText-style baseline of Joulin et al. 2017, "Bag of Tricks for Efficient Text
Classification", with characters instead of words). It is registered as a model version of
family ``moderation`` (``genloop moderation train FILE --name NAME``) — weights as safetensors,
its settings in the version's config, its labels — and named in the policy's ``classifier``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

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


def train_classifier(examples: list[tuple[str, str]], *, steps: int = 300, lr: float = 0.5,
                     buckets: int = 1 << 16, weight_decay: float = 1e-6) -> TextClassifier:
    """Full-batch Adam on the cross-entropy, from zero weights: deterministic, no seed needed."""
    labels = sorted({label for _, label in examples})
    model = TextClassifier(labels, torch.zeros(buckets, len(labels)), torch.zeros(len(labels)))
    model.weight.requires_grad_(True)
    model.bias.requires_grad_(True)
    texts = [t for t, _ in examples]
    target = torch.tensor([labels.index(label) for _, label in examples])
    # class weights: a rare "blocked" label must not drown in ordinary examples
    counts = torch.bincount(target, minlength=len(labels)).float()
    balance = counts.sum() / (len(labels) * counts)
    opt = torch.optim.Adam([model.weight, model.bias], lr=lr, weight_decay=weight_decay)
    bags = model.bags(texts)  # the features once: only the weights change
    for _ in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model.logits(texts, bags), target, weight=balance)
        loss.backward()
        opt.step()
    model.weight.requires_grad_(False)
    model.bias.requires_grad_(False)
    return model


def accuracy(model: TextClassifier, examples: list[tuple[str, str]]) -> float:
    scores = model.scores([t for t, _ in examples])
    right = sum(max(s, key=s.__getitem__) == label for s, (_, label) in zip(scores, examples,
                                                                            strict=True))
    return right / max(1, len(examples))


def register_classifier(store: Store, name: str, model: TextClassifier,
                        examples_sha256: str, metrics: dict[str, float]) -> ModelVersion:
    """Write the classifier as a model directory and register it as version N of ``name``."""
    settings().models_dir.mkdir(parents=True, exist_ok=True)
    staged = ModelDir(Path(tempfile.mkdtemp(prefix=".staged-", dir=settings().models_dir)))
    save_file({"weight": model.weight.contiguous(), "bias": model.bias.contiguous()},
              str(staged.weights_file))
    atomic_write_json(staged.config_file, {"family": FAMILY, "ngrams": model.ngrams,
                                           "buckets": model.buckets})
    staged.write_labels(model.labels)
    return store.register_model(name, staged.path, family=FAMILY, dataset_hash=examples_sha256,
                                metrics=metrics)


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

