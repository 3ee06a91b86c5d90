"""Recipes: data + model + training + evaluation, one typed document.

Each section is defined beside its code (``TextDataConfig`` in data/, the family configs in
models/, ``TrainConfig`` here, ``EvalConfig`` in evaluation/) and composed here. A recipe is loaded
from YAML, overridden with ``--set section.key=value``, printed resolved, hashed, and frozen into
every run. Unknown keys and wrong types are errors that name the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from genloop.data.kinds import get_kind, kind_of
from genloop.errors import RecipeError, validation_message
from genloop.evaluation.kinds import eval_section
from genloop.models.family import ModelConfig
from genloop.models.lora import LoraSection
from genloop.models.registry import get_family
from genloop.training.objectives import OBJECTIVES


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelSection(Strict):
    """Which family, which named preset, and per-key overrides of the preset."""

    family: str = "gpt"
    preset: str = "tiny"
    config: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> ModelSection:
        self.resolved()  # unknown family, preset or key fails here, at load time
        return self

    def resolved(self, **fill: Any) -> ModelConfig:
        """The family's config: the preset, the overrides, and the data's shape fields the
        config declares (image_text data fills a vocabulary a class-conditional family lacks)."""
        family = get_family(self.family)
        fill = {k: v for k, v in fill.items() if k in family.config.model_fields}
        try:
            return family.make_config(self.preset, **{**self.config, **fill})
        except ValidationError as e:
            raise RecipeError(validation_message(e, prefix="model.config.")) from None


class TrainConfig(Strict):
    steps: int = Field(2000, ge=1, le=10_000_000)
    batch_size: int = Field(12, ge=1, le=65536, description="sequences per optimizer step")
    grad_accum: int = Field(1, ge=1, le=1024, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0, le=1.0)
    min_lr: float | None = Field(None, ge=0, description="cosine floor; default lr/10")
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0, le=10)
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = Field(1.0, ge=0, description="max grad norm; 0 disables")
    eval_every: int = Field(250, ge=1)
    eval_batches: int = Field(20, ge=1, description="batches per in-training validation estimate")
    checkpoint_every: int = Field(250, ge=1)
    log_every: int = Field(10, ge=1)
    seed: int = Field(0, ge=0)
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="auto = bf16 autocast where the CPU/GPU has fast bf16, else fp32"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model: ~30 s to start, then faster steps; "
        "auto = on for runs of 1000+ steps where a C++ compiler is present"
    )
    threads: int | None = Field(None, ge=1, le=1024, description="torch intra-op threads")
    tensorboard: bool = True
    time_limit_s: float | None = Field(None, gt=0, description="stop cleanly after this long")
    ema_decay: float | None = Field(
        None, ge=0.0, lt=1.0, description="keep an exponential moving average of the weights "
        "(e.g. 0.999); evaluation, the best checkpoint and the registered model use it"
    )
    objective: str | None = Field(
        None, description="what training minimises (training/objectives.py): likelihood = the "
        "family's own objective; pairs (or sft) = the completion tokens only; dpo = paired "
        "preferences against the frozen parent; kto = desirable/undesirable completions against "
        "the frozen parent; default: the data kind's own"
    )
    beta: float = Field(0.1, gt=0, le=100, description="dpo, kto: how far the tuned model may move "
                        "from its parent (the β of the implicit reward β·log π/π_ref)")
    sft_weight: float = Field(0.0, ge=0, le=100, description="dpo: weight of the chosen "
                              "completions' negative log-likelihood per token added to the loss "
                              "(RPO, Pang et al. 2024; TRL's rpo_alpha); 0 = plain DPO")
    desirable_weight: float = Field(1.0, ge=0, le=100, description="kto: λ_D, the weight of the "
                                    "desirable completions' loss")
    undesirable_weight: float = Field(1.0, ge=0, le=100, description="kto: λ_U, the weight of the "
                                      "undesirable completions' loss")
    lora: LoraSection | None = Field(None, description="tune the parent with LoRA adapters "
                                     "(rank, alpha, dropout, target_modules): only they train, "
                                     "and the version holds only them (models/lora.py)")
    optimizer: Literal["adamw", "muon"] = Field(
        "adamw", description="adamw = fused AdamW for every parameter; muon = Muon "
        "(torch.optim.Muon) for the hidden weight matrices, AdamW for the rest (training/optimizers.py)")
    muon_lr: float = Field(0.02, gt=0, le=10.0, description="muon: peak learning rate of the "
                           "hidden matrices (the lr schedule scales it as it scales lr)")
    muon_momentum: float = Field(0.95, ge=0.0, lt=1.0, description="muon: Nesterov momentum")
    muon_weight_decay: float = Field(0.0, ge=0, le=10, description="muon: decoupled weight decay "
                                     "of the hidden matrices (times the learning rate)")
    seq_len_warmup_steps: int = Field(0, ge=0, description="text: train on shorter windows first "
                                      "(seq_len_floor, doubling up to block_size) for this many "
                                      "steps; 0 = full windows from the start")
    seq_len_floor: int = Field(16, ge=2, description="text: the first window length of the "
                               "sequence-length warmup")
    batch_warmup_steps: int = Field(0, ge=0, description="text: grow the batch from "
                                    "batch_floor, doubling up to batch_size, over this many steps")
    batch_floor: int = Field(4, ge=1, description="text: the first batch size of the batch warmup")

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, name: str | None) -> str | None:
        if name is not None and name not in OBJECTIVES:
            raise ValueError(f"unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
        return name

    @property
    def floor_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr


OBJECTIVE_DEFAULTS = {key: TrainConfig.model_fields[key].default
                      for key in ("objective", "beta", "sft_weight", "desirable_weight",
                                  "undesirable_weight")}
SPEED_DEFAULTS = {key: TrainConfig.model_fields[key].default
                  for key in ("optimizer", "muon_lr", "muon_momentum", "muon_weight_decay",
                              "seq_len_warmup_steps", "seq_len_floor", "batch_warmup_steps",
                              "batch_floor")}
# fields frozen only when set
LATER_DEFAULTS = {**OBJECTIVE_DEFAULTS, "lora": None, **SPEED_DEFAULTS}


class Recipe(Strict):
    name: str = Field("model", description="registered model name (versions name@1, name@2, ...)")
    # the data and eval sections are the types of the data's kind (``data/kinds.py``,
    # ``evaluation/kinds.py``), picked by ``data.kind`` (default text)
    data: Any = Field(description="where the data comes from; its `kind` picks the section's type")
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: Any = Field(None, description="how the trained model is judged: the data kind's section")
    parent: str | None = Field(None, description="fine-tune from this model version (name@N)")

    @model_validator(mode="before")
    @classmethod
    def _sections_of_the_kind(cls, tree: Any) -> Any:
        """Validate ``data`` and ``eval`` as the sections of the data's kind."""
        if not isinstance(tree, dict) or "data" not in tree:
            return tree
        kind = kind_of(tree["data"])
        config = get_kind(kind).config
        try:
            data = tree["data"] if isinstance(tree["data"], config) else config.model_validate(tree["data"])
        except ValidationError as e:
            raise RecipeError(validation_message(e, prefix="data.")) from None
        try:
            ev = eval_section(kind, tree.get("eval"))
        except ValidationError as e:
            raise RecipeError(validation_message(e, prefix="eval.")) from None
        return {**tree, "data": data, "eval": ev}

    def model_config_for(self, fill: dict[str, Any]) -> ModelConfig:
        """The model config with the dataset's shape fields (vocab size; image size, classes)."""
        return self.model.resolved(**fill)

    def frozen(self) -> dict[str, Any]:
        tree = self.model_dump(mode="json")
        # fields added with the objectives (LoRA, the optimizer and warmup options) are frozen
        # only when set otherwise than their default: recipes from before them keep their
        # frozen form and hash
        for key, default in LATER_DEFAULTS.items():
            if tree["train"][key] == default:
                del tree["train"][key]
        return tree

    def hash(self) -> str:
        blob = json.dumps(self.frozen(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.frozen(), sort_keys=False, allow_unicode=True)


def set_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``a.b.c=value`` (value parsed as YAML: numbers, booleans, lists) in place."""
    if "=" not in assignment:
        raise RecipeError(f"--set {assignment!r}: expected key=value, e.g. train.steps=500")
    key, raw = assignment.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise RecipeError(f"--set {assignment!r}: empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # 'ROMEO:' parses as a mapping and '#tag' as a comment (None): the user meant the text
    if (isinstance(value, dict) and not raw.lstrip().startswith("{")) or (
        value is None and raw.strip() not in ("null", "Null", "NULL", "~")
    ):
        value = raw
    node = tree
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"--set {key}: {part!r} is a value, not a section")
        node = child
    node[path[-1]] = value


BUILTIN_DIR = Path(__file__).parent / "recipes"


def builtin_recipes() -> dict[str, Path]:
    """Recipes that ship with genloop, by name (``genloop train shakespeare-char``)."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.yaml"))}


def load_recipe(source: str | Path | dict[str, Any] | None, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe from a YAML file (or a dict), with ``section.key=value`` overrides applied."""
    if source is None:
        tree: dict[str, Any] = {}
    elif isinstance(source, dict):
        tree = json.loads(json.dumps(source))  # a private deep copy
    else:
        path = Path(source)
        if not path.is_file() and str(source) in builtin_recipes():
            path = builtin_recipes()[str(source)]
        if not path.is_file():
            known = ", ".join(sorted(builtin_recipes()))
            raise RecipeError(f"{path}: recipe file not found (built-in recipes: {known})")
        try:
            tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as e:
            raise RecipeError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(tree, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of sections (data, model, train, eval)")
    for assignment in overrides:
        set_override(tree, assignment)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as e:
        message = validation_message(e)
        raise RecipeError(message) from None
