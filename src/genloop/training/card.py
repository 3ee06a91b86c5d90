"""The model card: what a registered version is, what made it, how good it is, what it is for.

Markdown, written beside the weights (``card.md``), shown by ``genloop models show``.
"""

from __future__ import annotations

import json
from typing import Any, cast

from genloop.data.kinds import get_kind
from genloop.generation.chat import ChatTemplate
from genloop.generation.kinds import IMAGES, generates
from genloop.models.family import Family, ImageModelConfig, ModelConfig
from genloop.training.recipe import Recipe

METRIC_NAMES = {
    "val_loss": "validation loss (nats/token)",
    "bits_per_char": "bits per character",
    "bits_per_token": "bits per token",
    "perplexity": "perplexity",
    "distinct_1": "distinct-1 (samples)",
    "distinct_2": "distinct-2 (samples)",
    "repetition_rate": "4-gram repetition rate (samples)",
    "train_steps": "training steps",
    "train_tokens": "training tokens",
    "train_time_s": "training time (s)",
    "train_tokens_per_s": "training tokens/s",
    "fid": "FID (domain classifier features; lower is better)",
    "kid": "KID ×1 (lower is better)",
    "precision": "precision (k-NN manifolds)",
    "recall": "recall (k-NN manifolds)",
    "inception_score": "Inception-style score (domain classifier)",
    "sample_accuracy": "samples classified as the requested class",
    "test_nelbo_nats": "test negative ELBO (nats/image)",
    "test_iw_nll_nats": "test importance-weighted NLL (nats/image)",
    "test_accuracy": "test accuracy",
    "sample_images_per_s": "sampling images/s",
    "train_images": "training images seen",
    "train_images_per_s": "training images/s",
    "preference_accuracy": "held-out pair accuracy (chosen preferred)",
    "reward_margin": "mean reward margin, chosen − rejected",
}


def fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def encoder_lines(encoder: dict[str, Any] | None) -> list[str]:
    """The lineage lines of a model that started from a pretrained text encoder."""
    if not encoder:
        return []
    how = "kept frozen" if encoder.get("freeze") else "tuned with the model"
    return [f"- text encoder: `{encoder.get('ref')}` (weights sha256 `{encoder.get('sha256')}`), {how}"]


def tuning_lines(recipe: Recipe, data_meta: dict[str, Any], lineage: dict[str, Any]) -> list[str]:
    """A tuned version's section: what it was tuned from, with what, on which records, and
    where those came from (the dataset's ``origin``: counts, filters, thresholds)."""
    t = recipe.train
    objective = t.objective or "the data kind's own"
    settings = {"dpo": {"beta": t.beta},
                "kto": {"beta": t.beta, "desirable_weight": t.desirable_weight,
                        "undesirable_weight": t.undesirable_weight}}.get(str(t.objective), {})
    records = (data_meta.get("counts") or {}).get("records") or {}
    lines = ["", "## Tuning", "", "| | |", "| --- | --- |",
             f"| parent | `{lineage.get('parent') or recipe.parent}` |",
             f"| objective | `{objective}`"
             + "".join(f", {k} {v:g}" for k, v in settings.items()) + " |",
             f"| dataset hash | `{lineage.get('dataset_hash')}` |",
             f"| records | {fmt(records.get('train', '?'))} train, "
             f"{fmt(records.get('val', '?'))} validation |",
             f"| steps, lr | {fmt(t.steps)}, {t.lr:g} |"]
    if t.lora is not None:  # an adapter version: what it adapts (adapter.json has the rest)
        targets = ", ".join(t.lora.target_modules) if t.lora.target_modules else "the family's default"
        lines.append(f"| LoRA | rank {t.lora.rank}, alpha {t.lora.scale_alpha:g}, "
                     f"dropout {t.lora.dropout:g}, targets {targets}; adapter weights only "
                     "(`genloop merge` folds them in) |")
    origin = data_meta.get("origin")
    if origin is None:
        origin = (data_meta.get("config") or {}).get("origin")
    if isinstance(origin, dict):
        for key, value in origin.items():
            shown = value if isinstance(value, (str, int, float)) else json.dumps(value, ensure_ascii=False)
            lines.append(f"| {str(key).replace('_', ' ')} | {fmt(shown)} |")
    elif origin is not None:
        lines.append(f"| origin | {origin} |")
    return lines


def model_card(
    ref: str,
    family: Family,
    config: ModelConfig,
    recipe: Recipe,
    data_meta: dict[str, Any],
    metrics: dict[str, Any],
    samples: list[str],
    lineage: dict[str, Any],
) -> str:
    n_params = metrics.get("parameters")
    image = generates(family) is IMAGES  # what it makes decides what the card says
    use = (
        "A reward model: it scores a prompt and a completion, higher for what the preferences in "
        f"`{data_meta.get('name', '?')}` favour (best-of-n generation ranks candidates by it). It "
        "generates nothing, and knows only the taste of those preferences."
        if family.score is not None else
        "Research, teaching and experimentation with small image models trained on the dataset "
        f"below. It draws images in the style of `{data_meta.get('name', '?')}` and nothing else."
        if image else
        "Research, teaching and experimentation with small generative text models trained on the "
        f"dataset below. It continues text in the style of `{data_meta.get('name', '?')}`; it "
        "knows nothing beyond that corpus, makes things up, and has no safety tuning: review "
        "outputs before you publish them."
    )
    shape = cast(ImageModelConfig, config)  # read only when ``image``: an image family's config
    what = (f"images {shape.channels}×{shape.image_size}×{shape.image_size}, "
            f"{shape.num_classes} classes" + (", class-conditional" if shape.conditional else "")
            if image else
            f"{getattr(recipe.data, 'tokenizer', '?')}, vocabulary {config.model_dump().get('vocab_size')}")
    lines = [
        f"# {ref}",
        "",
        f"A **{family.name}** model ({family.description}), preset `{recipe.model.preset}`"
        + (f", {n_params:,} parameters" if n_params else "") + ".",
        "",
        "## Intended use",
        "",
        use,
        "",
        "## Data",
        "",
        "| | |",
        "| --- | --- |",
        f"| dataset | `{data_meta.get('name', '?')}` (hash `{str(lineage.get('dataset_hash'))[:16]}`) |",
        f"| source | `{data_meta.get('source', recipe.data.source)}` |",
        f"| kind | `{recipe.data.kind}`: {get_kind(recipe.data.kind).holds} |",
        f"| {'images' if image else 'tokenizer'} | {what} |",
    ]
    counts = data_meta.get("counts", {})
    for key in ("train_tokens", "val_tokens", "docs", "duplicates_removed"):
        if key in counts:
            lines.append(f"| {key.replace('_', ' ')} | {fmt(counts[key])} |")
    if recipe.parent:
        lines += tuning_lines(recipe, data_meta, lineage)
    lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
    for key, value in metrics.items():
        lines.append(f"| {METRIC_NAMES.get(key, key)} | {fmt(value)} |")
    lines += ["", "## Model config", "", "| key | value |", "| --- | --- |"]
    for key, value in config.model_dump().items():
        lines.append(f"| {key} | {value} |")
    lines += [
        "",
        "## Lineage",
        "",
        f"- run: `{lineage.get('run_id')}`",
        f"- recipe hash: `{lineage.get('recipe_hash')}`",
        f"- parent: `{lineage.get('parent') or 'none (trained from scratch)'}`",
        *encoder_lines(lineage.get("text_encoder")),
        "",
        "## Recipe",
        "",
        "```yaml",
        recipe.to_yaml().rstrip(),
        "```",
    ]
    if samples and image:
        lines += ["", "## Samples", "", f"![samples]({samples[0]})", ""]
        return "\n".join(lines)
    if samples:
        lines += ["", "## Samples", ""]
        for s in samples[:4]:
            lines += ["```text", s.strip("\n")[:600], "```", ""]
    lines += ["## Chat template", "", ChatTemplate().describe()]
    return "\n".join(lines)
