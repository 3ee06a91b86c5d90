"""classifier — a small CNN trained on a dataset's labels: the feature extractor behind FID/KID/PR.

Published FIDs use Inception-v3 features from ImageNet; on 8×8 digits or 28×28 MNIST that network
neither fits nor helps, so genloop trains its own extractor on the training split and registers it
as a versioned model like any other family. FID, KID and precision/recall then measure distances
between the ``feature_dim`` penultimate activations; the Inception Score and class accuracy use its
class probabilities. The DCGAN/VAE literature on MNIST does the same with a LeNet-style network.

Network: three stages of conv3×3-BatchNorm-ReLU (widths w, 2w, 4w; one conv in the first stage,
two in the others), 2×2 max-pooling before stages 2 and 3 (32 → 8, 28 → 7, 8 → 2), global average
pooling, a linear layer to ``feature_dim`` + ReLU (the features), dropout, a linear layer to the
``num_classes`` logits. Global pooling makes the same network serve every image size.

Notable choices: BatchNorm (fast and stable for a CNN this size; in eval mode — which ``predict``
always uses — every image is scored independently of its batch); optional random translations of
±``shift`` pixels in training (edge pixels repeated), drawn from the batch's generator so a run
stays reproducible. ``sample`` refuses: a classifier does not generate images.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import Field

from genloop.errors import InvalidInput
from genloop.models.family import Family, ImageBatch, ImageModelConfig, ImageRequest


class ClassifierConfig(ImageModelConfig):
    width: int = Field(32, ge=4, le=1024, description="channels of the first stage (then 2x, 4x)")
    feature_dim: int = Field(128, ge=8, le=4096, description="width of the features FID/KID/PR use")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout before the logits")
    shift: int = Field(0, ge=0, le=8, description="random translation in pixels during training (0: off)")


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(width=8, feature_dim=32),
    "small": dict(width=16, feature_dim=128, dropout=0.1),  # MNIST: 99.2% after 1,000 steps, ~1.5 min
}


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class Classifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            conv_bn_relu(config.channels, w),
            nn.MaxPool2d(2),
            conv_bn_relu(w, 2 * w),
            conv_bn_relu(2 * w, 2 * w),
            nn.MaxPool2d(2),
            conv_bn_relu(2 * w, 4 * w),
            conv_bn_relu(4 * w, 4 * w),
        )
        self.to_features = nn.Linear(4 * w, config.feature_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (B, feature_dim) of images (B, C, H, W) in [-1, 1]."""
        h = self.body(x)  # (B, 4w, H/4, W/4)
        return F.relu(self.to_features(h.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_classes)."""
        return self.head(self.dropout(self.features(x)))


def build(config: ClassifierConfig) -> Classifier:
    if config.num_classes < 2:
        raise InvalidInput(
            f"classifier: num_classes is {config.num_classes}; it needs a dataset with at least 2 "
            "labelled classes (set from the dataset's labels)"
        )
    if config.image_size < 4:
        raise InvalidInput(f"classifier: image_size {config.image_size} is too small (at least 4)")
    return Classifier(config)


def random_shift(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image (B, C, H, W) by its own offsets in [-shift, shift]², edge pixels repeated."""
    B, C, H, W = images.shape
    padded = F.pad(images, (shift, shift, shift, shift), mode="replicate")  # (B, C, H+2s, W+2s)
    offsets = torch.randint(0, 2 * shift + 1, (2, B), generator=generator).to(images.device)
    rows = offsets[0][:, None] + torch.arange(H, device=images.device)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(W, device=images.device)  # (B, W)
    out = padded.gather(2, rows[:, None, :, None].expand(B, C, H, W + 2 * shift))  # (B, C, H, W+2s)
    return out.gather(3, cols[:, None, None, :].expand(B, C, H, W))


def loss(model: Classifier, batch: ImageBatch) -> dict[str, torch.Tensor]:
    """Cross-entropy of the labels, and the batch accuracy (not differentiated)."""
    images = batch.images
    if model.training and model.config.shift > 0:
        images = random_shift(images, model.config.shift, batch.generator)
    logits = model(images)
    ce = F.cross_entropy(logits, batch.labels)
    accuracy = (logits.detach().argmax(dim=1) == batch.labels).float().mean()
    return {"loss": ce, "accuracy": accuracy}


def sample(model: Classifier, request: ImageRequest, generator: torch.Generator):
    raise InvalidInput("a classifier does not generate images; use a gan, vae or diffusion model to sample")


@torch.no_grad()
def read_in_batches(model: nn.Module, images: torch.Tensor, batch_size: int, name: str,
                    read: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``read(features)`` → a second tensor, with the features (float32, on the CPU), for
    ``images`` (N, C, H, W) in [-1, 1], ``batch_size`` at a time in eval mode (restored after);
    shared by every CNN that reads images through ``model.features`` (classifier, recogniser)."""
    channels = model.config.channels  # type: ignore[union-attr]
    if images.ndim != 4 or images.shape[1] != channels:
        raise InvalidInput(f"{name} expects images (N, {channels}, H, W), got {tuple(images.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for start in range(0, images.shape[0], batch_size):
            f = model.features(images[start:start + batch_size].to(device, torch.float32))  # type: ignore[operator]
            out.append((f.float().cpu(), read(f).cpu()))
    finally:
        model.train(was_training)
    return out


def predict(
    model: Classifier, images: torch.Tensor, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, feature_dim) and class probabilities (N, K), float32 on the CPU, of ``images``
    (N, C, H, W) in [-1, 1]; in eval mode, ``batch_size`` images at a time (the mode is restored)."""
    parts = read_in_batches(model, images, batch_size, "classifier",
                            lambda f: torch.softmax(model.head(f).float(), dim=1))
    if not parts:
        d, k = model.config.feature_dim, model.config.num_classes
        return torch.zeros(0, d), torch.zeros(0, k)
    return torch.cat([f for f, _ in parts]), torch.cat([p for _, p in parts])

FAMILY = Family(
    name="classifier",
    kinds=("images", "image_text"),  # image_text: its images and labels (the FID extractor)
    conditioning="none",
    config=ClassifierConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    generative=False,
    description="small CNN classifier; the feature extractor behind FID, KID and precision/recall",
    exempt={"seeded_sample": "a classifier does not generate images"},
)
