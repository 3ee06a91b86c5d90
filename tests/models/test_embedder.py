"""The embedder family on its tiny preset: pooling as sentence-transformers computes it, padding
that changes nothing, normalisation, and a config that must fit the encoder."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from genloop.errors import InvalidInput
from genloop.models.embedder import FAMILY, pool
from genloop.models.family import TokenRequest

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(**overrides):
    torch.manual_seed(0)
    return FAMILY.build(FAMILY.make_config("tiny", vocab_size=40, **overrides)).eval()


def test_pooling_reads_the_real_tokens_only():
    tokens = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    torch.testing.assert_close(pool(tokens, mask, "mean")[0], tokens[0, :2].mean(0))
    torch.testing.assert_close(pool(tokens, mask, "mean_sqrt_len")[0], tokens[0, :2].sum(0) / 2 ** 0.5)
    torch.testing.assert_close(pool(tokens, mask, "max")[0], tokens[0, 1])
    torch.testing.assert_close(pool(tokens, mask, "cls"), tokens[:, 0])


@pytest.mark.parametrize("pooling", ["mean", "cls", "max", "mean_sqrt_len"])
def test_a_row_embeds_the_same_alone_and_padded_in_a_batch(pooling):
    model = _model(pooling=pooling)
    short, long = torch.tensor([[2, 5, 7, 3]]), torch.tensor([[2, 9, 8, 7, 6, 5, 3]])
    ids = torch.zeros(2, 7, dtype=torch.long)
    ids[0, :4], ids[1] = short[0], long[0]
    mask = ids != 0
    with torch.no_grad():
        both = FAMILY.embed(model, ids, mask)
        alone = FAMILY.embed(model, short, torch.ones_like(short, dtype=torch.bool))
    assert both.shape == (2, 32) and both.dtype == torch.float32
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(both[0], both[1])


def test_normalize_gives_unit_vectors_and_can_be_off():
    ids = torch.tensor([[2, 5, 7, 3]])
    mask = torch.ones_like(ids, dtype=torch.bool)
    with torch.no_grad():
        unit = FAMILY.embed(_model(), ids, mask)
        raw = FAMILY.embed(_model(normalize=False), ids, mask)
    torch.testing.assert_close(unit.norm(dim=1), torch.ones(1))
    assert abs(raw.norm() - 1) > 1e-3
    torch.testing.assert_close(unit, F.normalize(raw, dim=1))


def test_the_config_must_fit_the_encoder():
    with pytest.raises(ValueError, match="longer than the encoder's 64 positions"):
        FAMILY.make_config("tiny", block_size=128)
    config = FAMILY.make_config("tiny")
    assert config.vocab_size == 0 and config.width == 32
    with pytest.raises(ValueError, match="model_type"):
        FAMILY.config.model_validate({"hf_config": {}})


def test_it_does_not_generate():
    with pytest.raises(InvalidInput, match="does not generate text"):
        FAMILY.sample(_model(), TokenRequest(prompt_ids=torch.tensor([[2]])), torch.Generator())
