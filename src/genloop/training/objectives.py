"""Training objectives: what the loop minimises, chosen by the recipe (``train.objective``; when
it names none, its data kind's own: ``likelihood`` for text and images, ``pairs`` for pairs).

An objective is a pure function ``(family, model, batch, reference=None) -> {"loss": tensor, ...}``
("loss" is minimised; other entries are metrics). It speaks only the family contract, so one
objective serves every family that has the fields it calls (``needs``). One that compares the
model with where it started (preference tuning: DPO, KTO) sets ``needs_reference``: the loop
then passes a frozen copy of the recipe's parent as ``reference``.

    likelihood   maximum likelihood: the family's own ``loss`` (next-token cross-entropy for
                 text, the image objective — ELBO, denoising, minimax — for image families)
    pairs        supervised fine-tuning on prompt → completion: the negative log-likelihood of
                 the completion tokens only, averaged over them (``SequenceBatch.mask``)
    dpo          direct preference optimisation on chosen/rejected pairs, against a frozen copy
                 of the parent (Rafailov et al. 2023)

A new objective is a function here and one line in ``OBJECTIVES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from genloop.errors import RecipeError
from genloop.models.family import Family, SequenceBatch

Losses = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Objective:
    loss: Callable[[Family, torch.nn.Module, Any, torch.nn.Module | None], Losses]
    description: str
    # the Family fields ``loss`` calls beyond the contract's own ``loss``; a family without one
    # cannot take this objective
    needs: tuple[str, ...] = ()
    # the data kinds whose batches ``loss`` reads; None: whatever the family trains on
    kinds: frozenset[str] | None = None
    # True: the loop passes a frozen copy of the recipe's parent model as ``reference``
    needs_reference: bool = False


def likelihood(family: Family, model: torch.nn.Module, batch: Any,
               reference: torch.nn.Module | None = None) -> Losses:
    """Maximum likelihood (or the image family's own objective): ``family.loss``."""
    return family.loss(model, batch)


def pairs(family: Family, model: torch.nn.Module, batch: SequenceBatch,
          reference: torch.nn.Module | None = None) -> Losses:
    """Supervised fine-tuning: −Σ log p(completion tokens) / their count; prompt tokens (mask
    False) are context only. A batch without completion tokens has loss 0."""
    assert family.log_probs is not None  # guaranteed by ``needs``
    tokens = batch.mask.sum()
    loss = -family.log_probs(model, batch).sum() / tokens.clamp(min=1)
    return {"loss": loss, "completion_tokens": tokens.float()}


DPO_BETA = 0.1  # Rafailov et al.'s usual β; a recipe field when the loop-closing work needs more


def dpo(family: Family, model: torch.nn.Module, batch: Any,
        reference: torch.nn.Module | None = None, beta: float = DPO_BETA) -> Losses:
    """Direct preference optimisation (Rafailov et al. 2023, eq. 7), sigmoid loss:
    −log σ(β[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]) averaged over pairs, where c
    and r are the chosen and rejected completions of one prompt and π_ref the frozen parent (its
    log-probabilities computed once per batch, without gradients). Also returns the implicit
    reward margin and how often the chosen completion's reward is the higher (accuracy)."""
    assert family.log_probs is not None and reference is not None  # ``needs``, ``needs_reference``
    chosen, rejected = family.log_probs(model, batch.chosen), family.log_probs(model, batch.rejected)
    with torch.no_grad():
        ref_chosen = family.log_probs(reference, batch.chosen)
        ref_rejected = family.log_probs(reference, batch.rejected)
    margin = beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    return {"loss": -torch.nn.functional.logsigmoid(margin).mean(),
            "reward_margin": margin.detach().mean(),
            "reward_accuracy": (margin.detach() > 0).float().mean()}


def reward(family: Family, model: torch.nn.Module, batch: Any,
           reference: torch.nn.Module | None = None) -> Losses:
    """A reward model's Bradley–Terry loss on paired preferences: −log σ(r(c) − r(r)) averaged
    over pairs, r the model's score (``family.score``) of the prompt with its chosen (c) or
    rejected (r) completion. Also returns the mean margin r(c) − r(r) and how often it is
    positive (accuracy)."""
    assert family.score is not None  # guaranteed by ``needs``
    if not hasattr(batch, "chosen"):
        raise RecipeError("train.objective 'reward' trains on paired preferences (prompt, chosen, "
                          "rejected); this dataset is unpaired (data.form: paired)")
    margin = family.score(model, batch.chosen) - family.score(model, batch.rejected)
    return {"loss": -torch.nn.functional.logsigmoid(margin).mean(),
            "reward_margin": margin.detach().mean(),
            "reward_accuracy": (margin.detach() > 0).float().mean()}


OBJECTIVES: dict[str, Objective] = {
    "likelihood": Objective(likelihood, "the family's own objective (maximum likelihood)"),
    "pairs": Objective(pairs, "loss on the completion tokens only (supervised fine-tuning)",
                       needs=("log_probs",), kinds=frozenset({"pairs"})),
    "dpo": Objective(dpo, "direct preference optimisation against the frozen parent (paired preferences)",
                     needs=("log_probs",), kinds=frozenset({"preferences"}), needs_reference=True),
    "reward": Objective(reward, "a reward model's Bradley–Terry loss (paired preferences)",
                        needs=("score",), kinds=frozenset({"preferences"})),
}
DEFAULT = "likelihood"


def get_objective(name: str, family: Family, data_kind: str) -> Objective:
    """The objective ``name`` if ``family`` can take it on ``data_kind`` data, else RecipeError."""
    if name not in OBJECTIVES:
        raise RecipeError(f"train.objective: unknown objective {name!r} (known: {', '.join(OBJECTIVES)})")
    objective = OBJECTIVES[name]
    missing = [need for need in objective.needs if getattr(family, need) is None]
    if missing:
        raise RecipeError(f"train.objective {name!r} needs a family with {', '.join(missing)}; "
                          f"model.family {family.name!r} has none: use train.objective={DEFAULT}")
    if family.train_step is not None and name != DEFAULT:
        raise RecipeError(f"train.objective {name!r}: {family.name} takes its own optimizer steps "
                          f"with its own objective: use train.objective={DEFAULT}")
    if objective.kinds is not None and data_kind not in objective.kinds:
        raise RecipeError(f"train.objective {name!r} trains on {' or '.join(sorted(objective.kinds))} "
                          f"data; data.kind is {data_kind!r}")
    return objective
