"""LoRA adapters (Hu et al. 2021) on any family's network, through ``peft``.

A LoRA run keeps the parent's weights frozen and trains, beside each targeted linear layer W, a
low-rank update (α/r)·B·A (A: r×in, B: out×r, B initialised to zero, so step 0 is the parent).
``peft.inject_adapter_in_model`` replaces the targeted modules in place and keeps the network's
own class, so a family's ``loss``, ``log_probs``, ``sample`` and slot decoder run unchanged on
the adapted network.

    LoraSection        the recipe's ``train.lora``: rank, alpha, dropout, target_modules,
                       modules_to_save (small modules trained whole beside the adapters)
    targets_for        the modules a run adapts: the section's, or the family's default
    check_targets      a target that names no adaptable module → one-line RecipeError
    inject             adapters into a network (only they train)
    adapter_tensors    the adapter's own tensors (what an adapter version stores)
    merge              fold every adapter into its base layer: a plain network of the family

peft is an optional extra (``genloop[hf]``), imported inside the functions that need it.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from genloop.errors import CorruptArtifact, RecipeError
from genloop.models.family import Family, ModelConfig

# a family's default targets: attention and MLP projections, never the embeddings or the head
FAMILY_TARGETS: dict[str, list[str]] = {
    "gpt": ["qkv", "proj", "fc"],
}
# the ``hf`` family's by its transformers ``model_type`` (else peft's own table)
HF_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi": ["q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"],
}


class LoraSection(BaseModel):
    """``train.lora``: tune a registered version with LoRA adapters instead of all its weights."""

    model_config = ConfigDict(extra="forbid")

    rank: int = Field(8, ge=1, le=4096, description="r, the rank of each adapter's update")
    alpha: float | None = Field(None, gt=0, le=1e6, description="the update is scaled by "
                                "alpha / rank; default 2 × rank")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout on the adapters' input")
    target_modules: list[str] | None = Field(
        None, description="names (or dotted suffixes) of the modules to adapt; default: the "
        "family's (gpt: qkv, proj, fc; hf: by model_type, e.g. gpt2 c_attn, c_proj, c_fc)")
    modules_to_save: list[str] | None = Field(
        None, description="names (or dotted suffixes) of modules trained whole beside the "
        "adapters and stored with them (peft's modules_to_save), e.g. a character model's "
        "embedding `wte` and its norms `ln_1`, `ln_2`, `ln_f` when the new corpus shifts them")

    @field_validator("target_modules", "modules_to_save")
    @classmethod
    def _named(cls, names: list[str] | None) -> list[str] | None:
        if names is not None and (not names or not all(n.strip() for n in names)):
            raise ValueError("name at least one module, each a non-empty name")
        return names

    @property
    def scale_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank


def targets_for(section: LoraSection, family: Family, config: ModelConfig) -> list[str]:
    """The module names a LoRA run adapts: the section's, or the family's default."""
    if section.target_modules is not None:
        return list(section.target_modules)
    if family.name in FAMILY_TARGETS:
        return list(FAMILY_TARGETS[family.name])
    model_type = (getattr(config, "hf_config", None) or {}).get("model_type")
    if model_type in HF_TARGETS:
        return list(HF_TARGETS[model_type])
    if model_type:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as known

        if model_type in known:
            return list(known[model_type])
    raise RecipeError(f"train.lora.target_modules: {family.name} has no default targets; name "
                      "the modules to adapt")


def _adaptable(module: torch.nn.Module) -> bool:
    """Layers LoRA can adapt (peft's supported types): linear, embedding, convolution, and
    transformers' ``Conv1D`` (GPT-2's linear layers)."""
    if isinstance(module, torch.nn.Linear | torch.nn.Embedding | torch.nn.Conv1d | torch.nn.Conv2d):
        return True
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf")


def _matches(name: str, target: str) -> bool:
    return name == target or name.endswith("." + target)


def adaptable_modules(model: torch.nn.Module) -> list[str]:
    """Every adaptable module's short name (its last dotted part), once each, in order."""
    seen: dict[str, None] = {}
    for name, module in model.named_modules():
        if name and _adaptable(module):
            seen.setdefault(name.rsplit(".", 1)[-1], None)
    return list(seen)


def check_targets(model: torch.nn.Module, targets: list[str], family: Family) -> None:
    """A target that names no adaptable module of ``model`` → one line listing those that exist."""
    named = [(n, m) for n, m in model.named_modules() if n]
    for target in targets:
        if not any(_matches(n, target) and _adaptable(m) for n, m in named):
            raise RecipeError(f"train.lora.target_modules: {family.name} has no adaptable module "
                              f"{target!r} (its modules: {', '.join(adaptable_modules(model))})")


def check_saved(model: torch.nn.Module, names: list[str], family: Family) -> None:
    """A ``modules_to_save`` name that matches no module with parameters → one line."""
    named = [n for n, m in model.named_modules() if n and any(True for _ in m.parameters())]
    for target in names:
        if not any(_matches(n, target) for n in named):
            shorts = dict.fromkeys(n.rsplit(".", 1)[-1] for n in named)
            raise RecipeError(f"train.lora.modules_to_save: {family.name} has no module {target!r} "
                              f"(its modules: {', '.join(shorts)})")


def _saved(key: str, names: list[str]) -> bool:
    """Whether parameter ``key`` (``blocks.0.ln_1.weight``) belongs to a module of ``names``."""
    module = key.rsplit(".", 1)[0]
    return any(_matches(module, n) for n in names)


def peft_config(section: LoraSection, targets: list[str], model: torch.nn.Module) -> Any:
    """peft's ``LoraConfig`` for ``section`` on ``model`` (GPT-2's Conv1D stores W transposed)."""
    from peft import LoraConfig

    conv1d = any(type(m).__name__ == "Conv1D" and any(_matches(n, t) for t in targets)
                 for n, m in model.named_modules())
    return LoraConfig(r=section.rank, lora_alpha=section.scale_alpha, lora_dropout=section.dropout,
                      target_modules=list(targets), fan_in_fan_out=conv1d, bias="none")


def inject(model: torch.nn.Module, section: LoraSection, targets: list[str],
           family: Family) -> torch.nn.Module:
    """Adapters on ``targets`` of ``model``, in place; afterwards only the adapters train (the
    adapters' A is drawn from torch's global RNG: seed around the call)."""
    from peft import inject_adapter_in_model

    check_targets(model, targets, family)
    saved = section.modules_to_save or []
    check_saved(model, saved, family)
    inject_adapter_in_model(peft_config(section, targets, model), model)
    for name, p in model.named_parameters():
        p.requires_grad_(is_adapter_key(name) or _saved(name, saved))
    return model


def is_adapter_key(name: str) -> bool:
    """Whether a state-dict key belongs to an adapter (``…qkv.lora_A.default.weight``)."""
    return any(part.startswith("lora_") for part in name.split("."))


def _stored(model: torch.nn.Module, saved: list[str]) -> dict[str, torch.Tensor]:
    """The state-dict entries an adapter version stores: the adapters', and those of
    ``saved`` modules (a tied tensor once, under its first name)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, t in model.state_dict().items():
        if is_adapter_key(k) or (_saved(k, saved) and t.data_ptr() not in seen):
            seen.add(t.data_ptr())
            out[k] = t
    return out


def adapter_tensors(model: torch.nn.Module, saved: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The adapters' tensors of an injected network (and the ``saved`` modules' whole), contiguous
    on the CPU."""
    return {k: t.detach().contiguous().cpu() for k, t in _stored(model, saved or []).items()}


def load_adapter(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str,
                 saved: list[str] | None = None) -> None:
    """Load an adapter's tensors into an injected network; every adapter tensor must be there."""
    own = _stored(model, saved or [])
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise CorruptArtifact(f"{where}: adapter weights do not match its config ({what})")
    for k, t in tensors.items():
        if t.shape != own[k].shape:
            raise CorruptArtifact(f"{where}: adapter tensor {k!r} has shape {tuple(t.shape)}, "
                                  f"the adapter expects {tuple(own[k].shape)}")
    model.load_state_dict(tensors, strict=False)


@torch.no_grad()
def merge(model: torch.nn.Module) -> torch.nn.Module:
    """Fold every adapter into its base layer (W ← W + (α/r)·B·A) and put the base layer back:
    a network of the family's own shape (its state dict loads into ``family.build(config)``)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in layers:
        layer.merge()
        parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        setattr(parent, name.rsplit(".", 1)[-1], layer.get_base_layer())
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in model.__dict__:
            delattr(model, attr)
    return model


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
