"""Objectives: maximum likelihood and pairs on hand-computed values; the recipe's choice, with a
one-line error for an objective the family or data cannot take; the frozen reference copy."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from genloop.errors import RecipeError
from genloop.models.family import Family, SequenceBatch, TextModelConfig
from genloop.models.registry import get_family
from genloop.store import Store
from genloop.training.kinds import default_objective
from genloop.training.loop import train
from genloop.training.objectives import OBJECTIVES, Objective, get_objective, likelihood, pairs
from genloop.training.recipe import load_recipe

from ..conftest import tiny_image_recipe_dict  # noqa: TID252

# A bigram model over two tokens whose probabilities are easy to write down: after token a, the
# other token has p = 3/4 and the same token p = 1/4.
LN3 = math.log(3.0)


class Bigram(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor([[0.0, LN3], [LN3, 0.0]]))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]  # (B, T, V)


def _bigram_loss(model, batch):
    x, y = batch
    logits = model(x)
    return {"loss": F.cross_entropy(logits.flatten(0, 1), y.flatten())}


def _bigram_log_probs(model, batch: SequenceBatch) -> torch.Tensor:
    log_p = model(batch.inputs).log_softmax(-1).gather(-1, batch.targets[..., None]).squeeze(-1)
    return torch.where(batch.mask, log_p, 0.0).sum(dim=1)


BIGRAM = Family(name="bigram", kinds=("text",), conditioning="none", config=TextModelConfig,
                presets={"tiny": {}}, build=lambda config: Bigram(), loss=_bigram_loss,
                sample=lambda *a: iter(()), log_probs=_bigram_log_probs)
INPUTS = torch.tensor([[0, 1, 0], [1, 1, 0]])
TARGETS = torch.tensor([[1, 0, 0], [1, 0, 1]])  # p = 3/4, 3/4, 1/4 and 1/4, 3/4, 3/4
P = [[0.75, 0.75, 0.25], [0.25, 0.75, 0.75]]


def test_likelihood_is_the_familys_own_loss():
    got = likelihood(BIGRAM, Bigram(), (INPUTS, TARGETS))
    want = -sum(math.log(p) for row in P for p in row) / 6
    assert set(got) == {"loss"}
    assert got["loss"].item() == pytest.approx(want, rel=1e-6)


def test_pairs_counts_the_completion_tokens_only():
    mask = torch.tensor([[False, True, True], [True, False, False]])  # the completions
    got = pairs(BIGRAM, Bigram(), SequenceBatch(INPUTS, TARGETS, mask))
    # the mean over the three completion tokens of the batch, not a mean of per-row means
    want = -(math.log(0.75) + math.log(0.25) + math.log(0.25)) / 3
    assert got["loss"].item() == pytest.approx(want, rel=1e-6)
    assert got["completion_tokens"].item() == 3
    # a prompt token's target changes nothing: it is context only
    other = TARGETS.clone()
    other[0, 0] = 0
    assert pairs(BIGRAM, Bigram(), SequenceBatch(INPUTS, other, mask))["loss"] == got["loss"]
    # a batch with no completion token has loss 0 (not 0/0)
    empty = pairs(BIGRAM, Bigram(), SequenceBatch(INPUTS, TARGETS, torch.zeros_like(mask)))
    assert empty["loss"].item() == 0.0


@pytest.mark.parametrize("name", ["gpt", "lstm"])
def test_pairs_over_every_token_is_maximum_likelihood(name):
    family = get_family(name)
    config = family.make_config("tiny", vocab_size=16, block_size=16)
    model = family.build(config).eval()
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 16, (3, 17), generator=g)
    x, y = data[:, :-1], data[:, 1:]
    with torch.no_grad():
        every = pairs(family, model, SequenceBatch(x, y, torch.ones_like(x, dtype=torch.bool)))
        torch.testing.assert_close(every["loss"], likelihood(family, model, (x, y))["loss"])


def test_an_objective_the_family_or_data_cannot_take_is_a_one_line_recipe_error():
    with pytest.raises(RecipeError, match="'pairs' needs a family with log_probs") as e:
        get_objective("pairs", get_family("vae"), "images")
    assert "\n" not in str(e.value) and "'vae'" in str(e.value)
    with pytest.raises(RecipeError, match="'pairs': gan takes its own optimizer steps"):
        get_objective("pairs", replace(get_family("gan"), log_probs=_bigram_log_probs), "images")
    with pytest.raises(RecipeError, match="'pairs' trains on pairs data; data.kind is 'text'"):
        get_objective("pairs", get_family("gpt"), "text")
    assert get_objective("likelihood", get_family("gan"), "images") is OBJECTIVES["likelihood"]
    with pytest.raises(RecipeError, match=r"train\.objective: .*unknown objective 'ppo'"):
        load_recipe({"data": {"source": "x.txt"}, "train": {"objective": "ppo"}})


def test_train_refuses_an_objective_before_it_prepares_data(workspace):
    recipe = tiny_image_recipe_dict("vae", steps=2, objective="pairs")
    with pytest.raises(RecipeError, match="'pairs' needs a family with log_probs"):
        train(recipe)
    assert Store().list_runs() == [] and Store().list_datasets() == []


def test_a_recipe_that_names_no_objective_trains_with_its_data_kinds_own():
    assert default_objective("text") == default_objective("images") == "likelihood"
    assert default_objective("pairs") == "pairs"
    assert get_objective(default_objective("pairs"), get_family("gpt"), "pairs") is OBJECTIVES["pairs"]
    with pytest.raises(RecipeError, match="data kind 'poems' has no batches"):
        default_objective("poems")
    tree = {"data": {"source": "x.txt"}}
    default = load_recipe(tree)
    assert default.train.objective is None
    assert "objective" not in default.frozen()["train"]  # frozen (and hashed) as before objectives
    for name in ("likelihood", "pairs"):
        chosen = load_recipe({**tree, "train": {"objective": name}})
        assert chosen.frozen()["train"]["objective"] == name and chosen.hash() != default.hash()
        assert load_recipe(chosen.frozen()) == chosen


def test_an_objective_that_needs_a_reference_gets_a_frozen_copy_of_the_parent(
    workspace, tiny_recipe, monkeypatch
):
    seen: list[torch.nn.Module] = []

    def anchored(family, model, batch, reference=None):
        assert reference is not None and reference is not model
        seen.append(reference)
        return family.loss(model, batch)

    monkeypatch.setitem(OBJECTIVES, "anchored", Objective(anchored, "test", needs_reference=True))
    recipe = tiny_recipe(name="anchor", steps=4)
    with pytest.raises(RecipeError, match="'anchored' compares the model .*: set parent"):
        train({**recipe, "train": {**recipe["train"], "objective": "anchored"}})
    assert Store().list_runs() == []

    parent = train(recipe)
    child = train({**recipe, "parent": parent.model_ref,
                   "train": {**recipe["train"], "objective": "anchored"}})
    assert child.model_ref == "anchor@2" and seen
    reference = seen[0]
    assert all(r is reference for r in seen)  # one copy, for training and validation alike
    assert not reference.training and not any(p.requires_grad for p in reference.parameters())
    parent_weights = load_file(str(Path(Store().resolve("anchor@1").path) / "weights.safetensors"))
    child_weights = load_file(str(Path(Store().resolve("anchor@2").path) / "weights.safetensors"))
    ref_weights = reference.state_dict()
    assert all(torch.equal(ref_weights[k], parent_weights[k]) for k in parent_weights)  # untouched
    assert any(not torch.equal(child_weights[k], parent_weights[k]) for k in parent_weights)


def test_dpo_on_hand_computed_values():
    """Policy = the bigram above; reference = a uniform bigram (every token p = 1/2).
    Chosen row 0: targets p 3/4, 3/4 → log π = 2 ln 3/4; rejected row 0: 1/4, 1/4 → 2 ln 1/4;
    the reference gives 2 ln 1/2 to both, so the margin is β·2(ln 3/4 − ln 1/4) = β·2 ln 3."""
    from genloop.training.objectives import dpo
    from genloop.training.preference_batches import PreferenceBatch

    policy, reference = Bigram(), Bigram()
    with torch.no_grad():
        reference.table.zero_()
    inputs = torch.tensor([[0, 1]])
    chosen = SequenceBatch(inputs, torch.tensor([[1, 0]]), torch.tensor([[True, True]]))
    rejected = SequenceBatch(inputs, torch.tensor([[0, 1]]), torch.tensor([[True, True]]))
    beta = 0.1  # the recipe's default (train.beta)
    out = dpo(BIGRAM, policy, PreferenceBatch(chosen, rejected), reference)
    margin = beta * 2 * math.log(3.0)
    assert out["reward_margin"].item() == pytest.approx(margin, rel=1e-6)
    assert out["loss"].item() == pytest.approx(-math.log(1 / (1 + math.exp(-margin))), rel=1e-6)
    assert out["reward_accuracy"].item() == 1.0
    out["loss"].backward()  # gradients reach the policy only
    assert policy.table.grad is not None and reference.table.grad is None
    swapped = dpo(BIGRAM, policy, PreferenceBatch(rejected, chosen), reference)
    assert swapped["reward_accuracy"].item() == 0.0 and swapped["loss"] > out["loss"]
    assert OBJECTIVES["dpo"].needs_reference and default_objective("preferences") == "dpo"


def _rows(*targets: list[int]) -> SequenceBatch:
    """Rows after the prompt-free inputs [0, 1], every target a completion token."""
    t = torch.tensor(targets)
    return SequenceBatch(torch.tensor([[0, 1]] * len(targets)), t, torch.ones_like(t, dtype=torch.bool))


def _uniform() -> Bigram:
    reference = Bigram()
    with torch.no_grad():
        reference.table.zero_()  # every token p = 1/2
    return reference


def test_dpo_takes_beta_from_the_recipe():
    """β scales the implicit rewards β(log π − log π_ref): chosen 2 ln(3/2), rejected 2 ln(1/2)."""
    from genloop.training.preference_batches import PreferenceBatch
    from genloop.training.recipe import TrainConfig

    batch = PreferenceBatch(_rows([1, 0]), _rows([0, 1]))
    bound = get_objective("dpo", BIGRAM, "preferences", "paired", TrainConfig(beta=0.5))
    out = bound.loss(BIGRAM, Bigram(), batch, _uniform())
    assert out["chosen_reward"].item() == pytest.approx(0.5 * 2 * math.log(1.5), rel=1e-6)
    assert out["rejected_reward"].item() == pytest.approx(0.5 * 2 * math.log(0.5), rel=1e-6)
    assert out["reward_margin"].item() == pytest.approx(0.5 * 2 * math.log(3.0), rel=1e-6)
    assert out["loss"].item() == pytest.approx(math.log1p(math.exp(-math.log(3.0))), rel=1e-6)  # ln 4/3
    assert TrainConfig().beta == 0.1
    # RPO: + w × the chosen completion's NLL per token (each chosen target has p = 3/4)
    rpo = get_objective("dpo", BIGRAM, "preferences", "paired", TrainConfig(beta=0.5, sft_weight=2.0))
    out_rpo = rpo.loss(BIGRAM, Bigram(), batch, _uniform())
    assert out_rpo["chosen_nll"].item() == pytest.approx(-math.log(0.75), rel=1e-6)
    assert out_rpo["loss"].item() == pytest.approx(math.log(4 / 3) - 2.0 * math.log(0.75), rel=1e-6)
    assert load_recipe({"data": {"source": "x.txt"}, "train": {"beta": 0.5}}).frozen()["train"]["beta"] == 0.5
    assert "beta" not in load_recipe({"data": {"source": "x.txt"}}).frozen()["train"]  # hash as before
    with pytest.raises(RecipeError, match="train.beta"):
        load_recipe({"data": {"source": "x.txt"}, "train": {"beta": 0}})


def test_kto_on_hand_computed_values():
    """Policy = the bigram, reference uniform. Completions: row 0 (desirable) p 3/4, 3/4 →
    r0 = 2 ln(3/2); row 1 (undesirable) p 1/4, 1/4 → r1 = 2 ln(1/2). Mismatched pairs: 2 ln(3/2)
    and p 3/4, 1/4 → ln(3/4); their mean is the reference point z0 = ln(3/2) + ln(3/4)/2 > 0."""
    from genloop.training.objectives import kto
    from genloop.training.preference_batches import LabelledBatch

    def sigmoid(x: float) -> float:
        return 1 / (1 + math.exp(-x))

    beta, lam_d, lam_u = 0.5, 1.0, 2.0
    r0, r1 = 2 * math.log(1.5), 2 * math.log(0.5)
    z0 = math.log(1.5) + math.log(0.75) / 2
    policy, reference = Bigram(), _uniform()
    batch = LabelledBatch(_rows([1, 0], [0, 1]), torch.tensor([True, False]), _rows([1, 0], [1, 1]))
    out = kto(BIGRAM, policy, batch, reference, beta=beta, desirable_weight=lam_d,
              undesirable_weight=lam_u)
    want = (lam_d * (1 - sigmoid(beta * (r0 - z0))) + lam_u * (1 - sigmoid(beta * (z0 - r1)))) / 2
    assert out["loss"].item() == pytest.approx(want, rel=1e-6)
    assert out["kl"].item() == pytest.approx(z0, rel=1e-6) and not out["kl"].requires_grad
    assert out["desirable_reward"].item() == pytest.approx(beta * r0, rel=1e-6)
    assert out["undesirable_reward"].item() == pytest.approx(beta * r1, rel=1e-6)
    assert out["reward_margin"].item() == pytest.approx(beta * (r0 - r1), rel=1e-6)
    assert out["reward_accuracy"].item() == 1.0  # r0 above z0, r1 below
    out["loss"].backward()  # gradients reach the policy only, through r (z0 is detached)
    assert policy.table.grad is not None and reference.table.grad is None
    # mismatched pairs the policy finds less likely than the reference: z0 is clamped at 0
    clamped = kto(BIGRAM, Bigram(), LabelledBatch(batch.completions, batch.desirable,
                                                  _rows([0, 0], [1, 1])), reference, beta=beta)
    assert clamped["kl"].item() == 0.0
    assert clamped["loss"].item() == pytest.approx(
        ((1 - sigmoid(beta * r0)) + (1 - sigmoid(-beta * r1))) / 2, rel=1e-6)
    # the policy equal to its reference: r = z0 = 0, every example costs λ(1 − σ(0)) = λ/2
    same = kto(BIGRAM, reference, batch, reference, beta=beta, desirable_weight=lam_d,
               undesirable_weight=lam_u)
    assert same["loss"].item() == pytest.approx((lam_d + lam_u) / 4, rel=1e-6)
    assert OBJECTIVES["kto"].needs_reference and OBJECTIVES["kto"].params == (
        "beta", "desirable_weight", "undesirable_weight")


def test_sft_is_pairs_and_the_preference_objectives_check_the_form():
    assert OBJECTIVES["sft"] is OBJECTIVES["pairs"]
    assert load_recipe({"data": {"kind": "pairs", "source": "x.jsonl"},
                        "train": {"objective": "sft"}}).train.objective == "sft"
    gpt = get_family("gpt")
    assert get_objective("sft", gpt, "pairs").loss is pairs
    with pytest.raises(RecipeError, match="'sft' trains on pairs data; data.kind is 'text'"):
        get_objective("sft", gpt, "text")
    with pytest.raises(RecipeError, match="'kto' trains on unpaired preferences; data.form is 'paired'"):
        get_objective("kto", gpt, "preferences", "paired")
    with pytest.raises(RecipeError, match="'dpo' trains on paired preferences; data.form is 'unpaired'"):
        get_objective("dpo", gpt, "preferences", "unpaired")
    with pytest.raises(RecipeError, match="'kto' needs a family with log_probs"):
        get_objective("kto", get_family("vae"), "preferences")


def test_labelled_batches_hold_the_mismatched_pairs(tmp_path):
    """Row i of ``mismatched``: prompt i with the completion of row i+1 (the last with the first);
    a training batch is a pure function of (seed, step, micro, rank)."""
    import json

    from genloop.data.preferences import PreferencesDataConfig
    from genloop.models.family import sequence_batch
    from genloop.training.preference_batches import PreferenceBatches

    rows = [{"prompt": f"q{i}", "completion": f" answer {i}", "label": i % 2 == 0} for i in range(12)]
    src = tmp_path / "kto.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = PreferencesDataConfig(source=str(src), form="unpaired").prepare()
    batches, f = PreferenceBatches(data), data.train.fields
    got = batches._batch(data.train, [0, 1, 2], 32, torch.device("cpu"))
    want = sequence_batch([f["prompt"][i] for i in (0, 1, 2)], [f["completion"][i] for i in (1, 2, 0)],
                          32, batches.pad)
    assert torch.equal(got.mismatched.inputs, want.inputs) and torch.equal(got.mismatched.mask, want.mask)
    assert got.desirable.tolist() == [bool(x) for x in data.train.labels[:3]]
    config = type("C", (), {"block_size": 32})()
    a, b = (batches.train_batch(config, 3, 0, seed=1, rank=0, batch=4, device=torch.device("cpu"))
            for _ in range(2))
    assert torch.equal(a.mismatched.targets, b.mismatched.targets) and torch.equal(a.desirable, b.desirable)
