"""The hf family's own parts: its config keeps genloop's sizes and the transformers config in
step, and its Llama-layout preset passes the slot-decoding and KV-cache checks the contract runs
on the GPT-2-layout ``tiny``."""

from __future__ import annotations

import pytest

pytest.importorskip("transformers")

from genloop.errors import InvalidInput  # noqa: E402
from genloop.models.hf import FAMILY, HFConfig  # noqa: E402

from . import test_contract as contract  # noqa: E402, TID252

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sizes_come_from_the_hf_config_and_override_it():
    config = HFConfig(hf_config={"model_type": "llama", "vocab_size": 300,
                                 "max_position_embeddings": 128})
    assert (config.vocab_size, config.block_size) == (300, 128)
    small = FAMILY.make_config("tiny-llama", vocab_size=40, block_size=16)
    assert small.hf_config["vocab_size"] == 40 and small.hf_config["max_position_embeddings"] == 16
    assert HFConfig.model_validate_json(small.model_dump_json()) == small


def test_an_unknown_architecture_is_one_line():
    with pytest.raises(InvalidInput, match="does not know the architecture 'nope'"):
        FAMILY.build(HFConfig(hf_config={"model_type": "nope", "vocab_size": 10, "n_positions": 16}))


class _Llama:
    """The family as the contract checks see it, with the Llama preset as its ``tiny``."""

    def __getattr__(self, name):
        return getattr(FAMILY, name)

    def make_config(self, preset="tiny", **overrides):
        return FAMILY.make_config("tiny-llama", **overrides)


@pytest.mark.parametrize("check", ["slot_decoding", "kv_cache", "seeded_sample", "log_probs"])
def test_llama_layout_passes_the_contract(check):
    getattr(contract, f"check_{check}")(_Llama())
