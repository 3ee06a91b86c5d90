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
    sft          the same as ``pairs``, by the name tuning calls it (``genloop tune --objective sft``)
    dpo          direct preference optimisation on chosen/rejected pairs, against a frozen copy
                 of the parent (Rafailov et al. 2023); ``train.beta``
    mlm          masked language modelling (BERT): an embedder pretrained from scratch on text,
                 15% of tokens masked and predicted through its tied input embeddings
                 (``models/embedder.py`` ``mlm_loss``); metric: masked accuracy
    kto          Kahneman–Tversky optimisation on unpaired completions labelled desirable or
                 not, against a frozen copy of the parent (Ethayarajh et al. 2024);
                 ``train.beta``, ``train.desirable_weight``, ``train.undesirable_weight``

An objective's settings are recipe fields (``TrainConfig``) named in ``params``: the loop binds
them (``get_objective(..., train=...)``), so the loss stays a pure function of its arguments.
A new objective is a function here and one line in ``OBJECTIVES``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
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
    # the ``preferences`` form its batches must have ("paired" / "unpaired"); None: any
    form: str | None = None
    # the TrainConfig fields passed to ``loss`` as keyword arguments (``bind``)
    params: tuple[str, ...] = ()

    def bind(self, train: Any) -> Objective:
        """This objective with its ``params`` taken from ``train`` (a TrainConfig)."""
        if not self.params:
            return self
        values = {p: getattr(train, p) for p in self.params}
        return replace(self, loss=partial(self.loss, **values))


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


def _log_ratios(family: Family, model: torch.nn.Module, reference: torch.nn.Module,
                batch: SequenceBatch) -> torch.Tensor:
    """log π(y|x) − log π_ref(y|x) per row; the reference's under no_grad."""
    assert family.log_probs is not None
    policy = family.log_probs(model, batch)
    with torch.no_grad():
        ref = family.log_probs(reference, batch)
    return policy - ref


def dpo(family: Family, model: torch.nn.Module, batch: Any,
        reference: torch.nn.Module | None = None, *, beta: float = 0.1,
        sft_weight: float = 0.0) -> Losses:
    """Direct preference optimisation (Rafailov et al. 2023, eq. 7), sigmoid loss:
    −log σ(β[(log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))]) averaged over pairs, where c
    and r are the chosen and rejected completions of one prompt and π_ref the frozen parent (its
    log-probabilities computed once per batch, without gradients). Also returns the implicit
    rewards β(log π − log π_ref) of the chosen and the rejected completions, their margin, and
    how often the chosen one's is the higher (accuracy).

    ``sft_weight`` > 0 adds that weight times the chosen completions' negative log-likelihood per
    token (RPO, Pang et al. 2024, TRL's ``rpo_alpha``): DPO alone can lower the likelihood of the
    chosen completions too, as long as the rejected ones fall faster; the term keeps them likely."""
    assert family.log_probs is not None and reference is not None  # ``needs``, ``needs_reference``
    policy_chosen = family.log_probs(model, batch.chosen)
    with torch.no_grad():
        ref_chosen = family.log_probs(reference, batch.chosen)
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * _log_ratios(family, model, reference, batch.rejected)
    margin = chosen - rejected
    loss = -torch.nn.functional.logsigmoid(margin).mean()
    extra: Losses = {}
    if sft_weight > 0:
        nll = -policy_chosen.sum() / batch.chosen.mask.sum().clamp(min=1)
        loss = loss + sft_weight * nll
        extra["chosen_nll"] = nll.detach()
    return {"loss": loss, **extra,
            "chosen_reward": chosen.detach().mean(),
            "rejected_reward": rejected.detach().mean(),
            "reward_margin": margin.detach().mean(),
            "reward_accuracy": (margin.detach() > 0).float().mean()}


def reward(family: Family, model: torch.nn.Module, batch: Any,
           reference: torch.nn.Module | None = None) -> Losses:
    """A reward model's Bradley–Terry loss on paired preferences: −log σ(r(c) − r(r)) averaged
    over pairs, r the model's score (``family.score``) of the prompt with its chosen (c) or
    rejected (r) completion. Also returns the mean margin r(c) − r(r) and how often it is
    positive (accuracy)."""
    assert family.score is not None  # guaranteed by ``needs``; paired batches by ``form``
    margin = family.score(model, batch.chosen) - family.score(model, batch.rejected)
    return {"loss": -torch.nn.functional.logsigmoid(margin).mean(),
            "reward_margin": margin.detach().mean(),
            "reward_accuracy": (margin.detach() > 0).float().mean()}


def mlm(family: Family, model: torch.nn.Module, batch: Any,
        reference: torch.nn.Module | None = None) -> Losses:
    """Masked language modelling on a text batch's windows (its inputs; targets unused)."""
    from genloop.models.embedder import Embedder, mlm_loss

    if not isinstance(model, Embedder):
        raise RecipeError(f"train.objective 'mlm' pretrains an embedder; model.family {family.name!r} "
                          "is not one")
    return mlm_loss(model, batch[0])


def kto(family: Family, model: torch.nn.Module, batch: Any,
        reference: torch.nn.Module | None = None, *, beta: float = 0.1,
        desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> Losses:
    """Kahneman–Tversky optimisation (Ethayarajh et al. 2024, eq. 8) on a ``LabelledBatch``:
    with r = log π(y|x) − log π_ref(y|x) and the reference point z0, each example costs
    λ_D(1 − σ(β(r − z0))) if desirable, λ_U(1 − σ(β(z0 − r))) if not; the loss is their mean.
    z0 = max(0, mean of log π − log π_ref over the batch's mismatched pairs, prompt i with
    completion i+1): an estimate of KL(π‖π_ref), computed without gradients (detached), as the
    paper does. Metrics: the mean implicit reward β·r of the desirable and of the undesirable
    completions (0 when the batch has none), their margin, the KL estimate, and the share of
    examples on their label's side of z0 (accuracy)."""
    assert family.log_probs is not None and reference is not None  # ``needs``, ``needs_reference``
    r = _log_ratios(family, model, reference, batch.completions)
    with torch.no_grad():
        kl = _log_ratios(family, model, reference, batch.mismatched).mean().clamp(min=0)
    good = batch.desirable
    losses = torch.where(good, desirable_weight * (1 - torch.sigmoid(beta * (r - kl))),
                         undesirable_weight * (1 - torch.sigmoid(beta * (kl - r))))
    rewards = beta * r.detach()
    n_good, n_bad = good.sum().clamp(min=1), (~good).sum().clamp(min=1)
    desirable = torch.where(good, rewards, 0.0).sum() / n_good
    undesirable = torch.where(good, 0.0, rewards).sum() / n_bad
    right = torch.where(good, r.detach() > kl, r.detach() < kl)
    return {"loss": losses.mean(), "desirable_reward": desirable,
            "undesirable_reward": undesirable, "reward_margin": desirable - undesirable,
            "kl": kl, "reward_accuracy": right.float().mean()}


OBJECTIVES: dict[str, Objective] = {
    "likelihood": Objective(likelihood, "the family's own objective (maximum likelihood)"),
    "pairs": Objective(pairs, "loss on the completion tokens only (supervised fine-tuning)",
                       needs=("log_probs",), kinds=frozenset({"pairs"})),
    "dpo": Objective(dpo, "direct preference optimisation against the frozen parent (paired preferences)",
                     needs=("log_probs",), kinds=frozenset({"preferences"}), needs_reference=True,
                     form="paired", params=("beta", "sft_weight")),
    "kto": Objective(kto, "Kahneman–Tversky optimisation against the frozen parent (desirable or "
                     "undesirable completions)", needs=("log_probs",), kinds=frozenset({"preferences"}),
                     needs_reference=True, form="unpaired",
                     params=("beta", "desirable_weight", "undesirable_weight")),
    "mlm": Objective(mlm, "masked language modelling (BERT pretraining of an embedder)",
                     needs=("embed",), kinds=frozenset({"text"})),
    "reward": Objective(reward, "a reward model's Bradley–Terry loss (paired preferences)",
                        needs=("score",), kinds=frozenset({"preferences"}), form="paired"),
}
OBJECTIVES["sft"] = OBJECTIVES["pairs"]  # supervised fine-tuning, by the name users know
DEFAULT = "likelihood"


def get_objective(name: str, family: Family, data_kind: str, data_form: str | None = None,
                  train: Any = None) -> Objective:
    """The objective ``name`` if ``family`` can take it on ``data_kind`` data (of ``data_form``,
    for preferences), else RecipeError; its ``params`` bound from ``train`` when given."""
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
    if objective.form is not None and data_form is not None and data_form != objective.form:
        raise RecipeError(f"train.objective {name!r} trains on {objective.form} preferences; "
                          f"data.form is {data_form!r}")
    return objective if train is None else objective.bind(train)
