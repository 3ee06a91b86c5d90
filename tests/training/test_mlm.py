"""The mlm objective: BERT's masking, predictions through the tied embeddings, the embedder
trained from a preset over a word tokenizer, the shapes-mlm recipe."""

from __future__ import annotations

import pytest
import torch

from genloop.data.text import TextDataConfig
from genloop.errors import RecipeError
from genloop.models.embedder import Embedder, mlm_loss
from genloop.models.registry import get_family
from genloop.training.loop import train
from genloop.training.objectives import get_objective
from genloop.training.recipe import load_recipe


def tiny(vocab: int = 40) -> Embedder:
    torch.manual_seed(0)
    return Embedder(get_family("embedder").make_config("tiny", vocab_size=vocab, block_size=32))


def test_masking_follows_bert_and_adds_no_parameters():
    model = tiny()
    names = set(model.state_dict())
    seen: list[torch.Tensor] = []
    real_forward = model.forward

    def spy(ids, mask):
        seen.append(ids.clone())
        return real_forward(ids, mask)

    model.forward = spy  # type: ignore[method-assign]
    ids = torch.randint(2, 40, (64, 32))
    out = mlm_loss(model, ids, mask_id=0)
    assert set(out) == {"loss", "masked_accuracy"} and out["loss"].requires_grad
    changed = seen[0] != ids
    masked = seen[0] == 0  # ids never hold 0 here: every 0 is the mask token
    assert 0.09 < masked.float().mean() < 0.15  # 80% of the 15% chosen
    assert 0.005 < (changed & ~masked).float().mean() < 0.03  # ~10% of 15% random (some equal)
    # a pure function of the batch: the same masks again; another batch, other masks
    mlm_loss(model, ids, mask_id=0)
    assert torch.equal(seen[0], seen[1])
    mlm_loss(model, ids.roll(1, 0), mask_id=0)
    assert not torch.equal(seen[2], seen[0].roll(1, 0))
    assert set(model.state_dict()) == names  # tied: nothing new to save
    out["loss"].backward()
    assert model.encoder.get_input_embeddings().weight.grad.abs().sum() > 0


def test_mlm_learns_a_pattern():
    """Each row repeats a token: a masked position is read off its neighbours."""
    model = tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(0)
    held = torch.randint(2, 40, (64, 1), generator=g).repeat(1, 16)

    def held_out() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            out = {k: float(v) for k, v in mlm_loss(model, held).items()}
        model.train()
        return out

    before = held_out()
    for _ in range(150):
        ids = torch.randint(2, 40, (16, 1), generator=g).repeat(1, 16)
        loss = mlm_loss(model, ids)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out()
    assert after["loss"] < before["loss"] / 2 and after["masked_accuracy"] > 0.5 > before["masked_accuracy"]


def test_the_objective_takes_embedders_on_text_only():
    embedder, gpt = get_family("embedder"), get_family("gpt")
    assert get_objective("mlm", embedder, "text").description.startswith("masked language")
    with pytest.raises(RecipeError, match="needs a family with embed"):
        get_objective("mlm", gpt, "text")
    with pytest.raises(RecipeError, match="trains on text data"):
        get_objective("mlm", embedder, "image_text")


def test_shapes_mlm_trains_an_embedder_over_the_word_tokenizer(workspace):
    recipe = load_recipe("shapes-mlm")
    assert recipe.model.family == "embedder" and recipe.train.objective == "mlm"
    assert recipe.data.source == "shapes-captions" and recipe.data.tokenizer == "word"
    result = train("shapes-mlm", overrides=["train.steps=30", "train.eval_every=30", "train.eval_batches=2",
                                            "train.batch_size=16", "train.threads=1",
                                            "train.tensorboard=false", "train.checkpoint_every=30"])
    assert result.model_ref == "shapes-mlm@1"
    assert 0 <= result.metrics["masked_accuracy"] <= 1 and result.metrics["mlm_loss"] > 0
    data = TextDataConfig(source="shapes-captions", tokenizer="word").prepare()
    assert data.tokenizer.kind == "word" and data.tokenizer.vocab_size < 64
