"""recogniser — a CNN that reads every attribute of a ``shapes`` scene back off its pixels.

Text → image faithfulness is only measurable where the truth is known: ``shapes`` draws each
image from a scene (shape, colour, size, position of each object; a relation between two), so a
network trained to read those attributes back off real images can check a generated one. This
family is that network: the classifier's convolutional body (``models/classifier.py``) with one
linear head per attribute slot (``attribute_sizes``, filled from the dataset's attribute schema).
It is trained by the loop on first need (``training/recognisers.py``) like the feature extractor
behind FID, registered as ``<dataset>-recogniser@N`` with its test accuracies on its card, and
its penultimate features are the feature space of FID for image_text models.

Position matters here, so unlike the classifier the map is not pooled globally: it is pooled to
a ``grid`` × ``grid`` map and flattened before the feature layer (where an object is, and which
of two objects is left of the other, survive).

Loss: the sum over attribute slots of the cross-entropy of the slots that are present (−1 marks
an absent one). A scene with two objects has an equivalent description with the objects
exchanged ("a red circle left of a blue square" = "a blue square right of a red circle"): with
``swap_slots`` (the slot permutation that exchanges them), ``swap_slot`` (the relation's slot)
and ``swap_values`` (each relation value's inverse), every target is first brought to its
canonical form — the one whose relation value is the smaller of the pair — so the network learns
one answer per image (``canonical``). A dataset without attributes (a plain ImageBatch): one
head reads the class label. ``sample`` refuses: a recogniser does not generate images.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from genloop.errors import InvalidInput
from genloop.models.classifier import conv_bn_relu, random_shift, read_in_batches
from genloop.models.family import Family, ImageBatch, ImageModelConfig, ImageRequest


class RecogniserConfig(ImageModelConfig):
    attribute_sizes: tuple[int, ...] = Field((), description="values of each attribute slot; set "
                                             "from the dataset's schema (empty: the class label)")
    width: int = Field(32, ge=4, le=1024, description="channels of the first stage (then 2x, 4x)")
    grid: int = Field(4, ge=1, le=16, description="side of the pooled map the features read")
    feature_dim: int = Field(256, ge=8, le=4096, description="width of the features (FID's space)")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the heads")
    shift: int = Field(0, ge=0, le=8, description="random translation in pixels during training (0: off)")
    swap_slots: tuple[int, ...] = Field((), description="slot permutation exchanging two objects")
    swap_slot: int = Field(-1, ge=-1, description="the relation's slot (-1: no equivalent descriptions)")
    swap_values: tuple[int, ...] = Field((), description="each relation value's inverse")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=8, feature_dim=32, grid=2),
    "small": dict(width=32, feature_dim=256, grid=4),
}


class Recogniser(nn.Module):
    def __init__(self, config: RecogniserConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            conv_bn_relu(config.channels, w),
            conv_bn_relu(w, w),
            nn.MaxPool2d(2),
            conv_bn_relu(w, 2 * w),
            conv_bn_relu(2 * w, 2 * w),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * w, 4 * w),
            conv_bn_relu(4 * w, 4 * w),
        )
        self.pool = nn.AdaptiveAvgPool2d(config.grid)
        self.to_features = nn.Linear(4 * w * config.grid * config.grid, config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleList(nn.Linear(config.feature_dim, k) for k in head_sizes(config))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim) of images (B, C, H, W) in [-1, 1]."""
        return F.relu(self.to_features(self.pool(self.body(x)).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Every slot's logits side by side, (B, sum(attribute_sizes)); ``slot_logits`` splits them."""
        h = self.dropout(self.features(x))
        return torch.cat([head(h) for head in self.heads], dim=1)

    def slot_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of each attribute slot: a list of (B, attribute_sizes[a])."""
        return list(self(x).split(list(head_sizes(self.config)), dim=1))


def head_sizes(config: RecogniserConfig) -> tuple[int, ...]:
    return config.attribute_sizes or (config.num_classes,)


def build(config: RecogniserConfig) -> Recogniser:
    sizes = head_sizes(config)
    if any(k < 1 for k in sizes) or (not config.attribute_sizes and config.num_classes < 2):
        raise InvalidInput(f"recogniser: attribute sizes {list(sizes)}; it needs a dataset with an "
                           "attribute schema (shapes, shapes-pairs) or at least 2 labelled classes")
    if config.swap_slot >= 0:
        n = len(config.attribute_sizes)
        if sorted(config.swap_slots) != list(range(n)) or config.swap_slot >= n or \
                len(config.swap_values) != config.attribute_sizes[config.swap_slot]:
            raise InvalidInput(f"recogniser: swap_slots {list(config.swap_slots)} / swap_slot "
                               f"{config.swap_slot} / swap_values {list(config.swap_values)} do not "
                               f"fit {n} attribute slots")
    return Recogniser(config)


def canonical(config: RecogniserConfig, attributes: torch.Tensor) -> torch.Tensor:
    """Attribute ids (B, A) in their canonical form: rows whose relation value is the larger of its
    inverse pair get the objects exchanged and the relation inverted (no swap spec: unchanged)."""
    if config.swap_slot < 0 or attributes.numel() == 0:
        return attributes
    inverse = torch.tensor(config.swap_values, device=attributes.device)
    rel = attributes[:, config.swap_slot]
    flip = (rel >= 0) & (inverse[rel.clamp(min=0)] < rel)
    swapped = attributes[:, list(config.swap_slots)].clone()
    swapped[:, config.swap_slot] = inverse[rel.clamp(min=0)]
    return torch.where(flip[:, None], swapped, attributes)


def targets(config: RecogniserConfig, batch: ImageBatch) -> torch.Tensor:
    """The (B, A) attribute ids a batch asks for: its attributes in canonical form, or its labels."""
    attributes = getattr(batch, "attributes", None)
    if config.attribute_sizes:
        if attributes is None:
            raise InvalidInput("recogniser: this batch has no attributes; train it on image_text data "
                               "with an attribute schema (shapes, shapes-pairs)")
        return canonical(config, attributes.long())
    return batch.labels[:, None]


def loss(model: Recogniser, batch: ImageBatch) -> dict[str, torch.Tensor]:
    """Sum over slots of the cross-entropy of present slots; per-batch accuracy of whole images."""
    images = batch.images
    if model.training and model.config.shift > 0:
        images = random_shift(images, model.config.shift, batch.generator)
    want = targets(model.config, batch).to(images.device)
    total = images.new_zeros(())
    right = torch.ones(len(images), dtype=torch.bool, device=images.device)
    for a, logits in enumerate(model.slot_logits(images)):
        y = want[:, a]
        present = y >= 0
        if present.any():
            total = total + F.cross_entropy(logits[present], y[present])
        right &= (logits.detach().argmax(1) == y) | ~present
    return {"loss": total, "accuracy": right.float().mean()}


def sample(model: Recogniser, request: ImageRequest, generator: Any):
    raise InvalidInput("a recogniser does not generate images; use a text-diffusion or text-gan model")


@torch.no_grad()
def predict(model: Recogniser, images: torch.Tensor, batch_size: int = 256
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Attribute ids (N, A) int64 (canonical form) and features (N, feature_dim) float32, on the
    CPU, of ``images`` (N, C, H, W) in [-1, 1]; in eval mode (the mode is restored)."""
    parts = read_in_batches(model, images, batch_size, "recogniser",
                            lambda f: torch.stack([head(f).argmax(1) for head in model.heads], dim=1))
    if not parts:
        return torch.zeros(0, len(model.heads), dtype=torch.long), torch.zeros(0, model.config.feature_dim)
    return torch.cat([i for _, i in parts]), torch.cat([f for f, _ in parts])


FAMILY = Family(
    name="recogniser",
    kinds=("image_text", "images"),
    conditioning="none",
    config=RecogniserConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    generative=False,
    description="multi-head CNN reading each shapes attribute back; faithfulness and FID for text → image",
    exempt={"seeded_sample": "a recogniser does not generate images"},
)

__all__ = ["FAMILY", "Recogniser", "RecogniserConfig", "canonical", "predict"]
