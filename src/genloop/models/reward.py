"""reward — a reward model: a gpt's network with a scalar score head, trained on preferences.

A reward model reads a prompt and a completion and answers one number, higher for what people
prefer. It learns from paired preferences with the Bradley–Terry loss (Bradley & Terry 1952, as
reward models use it since Christiano et al. 2017 and Ouyang et al. 2022):
−log σ(r(chosen) − r(rejected)), σ of the score difference being the chance the chosen completion
wins. Best-of-n generation ranks its candidates by it (``generation/reward.py``).

Network: the gpt network (``models/gpt.py``) unchanged, and a linear score head on its final
hidden state at the position where the last completion token is predicted (the last masked
target of a ``SequenceBatch`` row). The model has then read the prompt and the whole completion
but its last token, which in the data — and in ``generation/reward.py`` — is the end-of-text the
preferences kind appends: the score reads the complete text, and right-padding after it changes
nothing (attention is causal). A row without completion tokens is read at its first position.

Notable choices: it starts from a text parent (``init_from``: a gpt of the same sizes and
tokenizer), its language-model head kept as the parent's (tied to the embeddings, so it costs
nothing) but unused; the score head starts small (std 0.02, bias 0), so every pair starts near
loss ln 2. It is not generative: ``sample`` refuses.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from genloop.errors import InvalidInput, RecipeError
from genloop.models.family import Family, ModelConfig, SequenceBatch
from genloop.models.gpt import GPT, GPTConfig
from genloop.models.gpt import PRESETS as GPT_PRESETS


class RewardConfig(GPTConfig):
    """A gpt's sizes: a reward model has its parent's."""


PRESETS: dict[str, dict[str, Any]] = dict(GPT_PRESETS)  # the parent's preset names fit


class RewardModel(nn.Module):
    def __init__(self, config: RewardConfig):
        super().__init__()
        self.config = config
        self.body = GPT(config)
        self.head = nn.Linear(config.n_embd, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """The score at every position (B, T) of token ids (B, T)."""
        return self.head(self.body.hidden(idx)).squeeze(-1)


def build(config: RewardConfig) -> RewardModel:
    return RewardModel(config)


def last_completion(mask: torch.Tensor) -> torch.Tensor:
    """(B,) the position of each row's last True in ``mask`` (B, T); 0 for a row with none."""
    pos = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    return torch.where(mask, pos, 0).max(dim=1).values


def score(model: RewardModel, batch: SequenceBatch) -> torch.Tensor:
    """(B,) float32: each row's score, read where its last completion token is predicted."""
    hidden = model.body.hidden(batch.inputs)  # (B, T, C)
    rows = torch.arange(hidden.size(0), device=hidden.device)
    return model.head(hidden[rows, last_completion(batch.mask)]).squeeze(-1).float()


def loss(model: RewardModel, batch: Any) -> dict[str, torch.Tensor]:
    """Bradley–Terry on a paired preference batch (``batch.chosen``, ``batch.rejected``): the
    family's own objective, the same as ``training/objectives.py``'s ``reward``."""
    margin = score(model, batch.chosen) - score(model, batch.rejected)
    return {"loss": -F.logsigmoid(margin).mean(), "reward_margin": margin.detach().mean(),
            "reward_accuracy": (margin.detach() > 0).float().mean()}


def init_from(model: RewardModel, parent_family: Family, parent_config: ModelConfig,
              parent: torch.nn.Module) -> None:
    """Start from a gpt parent: its weights into the body; the score head keeps its seeded init."""
    if not isinstance(parent, GPT):
        raise RecipeError(f"a reward model starts from a gpt (its network is a gpt's); the parent "
                          f"is a {parent_family.name}")
    mine, theirs = model.config.model_dump(), parent_config.model_dump()
    for key, value in mine.items():
        if theirs.get(key) != value:
            raise RecipeError(f"the parent's {key} is {theirs.get(key)}, this reward model's is "
                              f"{value}: give the reward model the parent's preset and config")
    model.body.load_state_dict(parent.state_dict())


def sample(model: RewardModel, request: Any, generator: Any) -> Any:
    raise InvalidInput("a reward model scores text, it does not generate it: rank candidates "
                       "with it (best_of, reward_model) or score with genloop.generation.reward.score")


FAMILY = Family(
    name="reward",
    kinds=("preferences",),
    conditioning="none",
    config=RewardConfig,
    presets=PRESETS,
    build=build,
    loss=loss,
    sample=sample,
    score=score,
    init_from=init_from,
    objective="reward",
    generative=False,
    description="a gpt with a scalar score head, trained on paired preferences (Bradley–Terry)",
    exempt={"seeded_sample": "a reward model scores text; it does not generate it"},
)
