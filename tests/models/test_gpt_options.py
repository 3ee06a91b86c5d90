"""gpt's modern options (rotary positions, QK-norm, ReLU²/SwiGLU, untied head): each trains, the
key/value cache and the slot decoder compute what the plain forward does, and exports that cannot
express an option refuse it by name."""

from __future__ import annotations

import pytest
import torch

from genloop.errors import InvalidInput
from genloop.models.family import TokenRequest
from genloop.models.gpt import FAMILY, GPT, GPTConfig, KVCache, SlotKVCache, modern_options

pytestmark = pytest.mark.usefixtures("one_thread")

VOCAB, BLOCK = 40, 16
OPTIONS = {
    "rope": dict(pos_emb="rope"),
    "qk_norm": dict(qk_norm=True),
    "relu2": dict(mlp="relu2"),
    "swiglu": dict(mlp="swiglu"),
    "untied": dict(tie_weights=False),
    "all": dict(pos_emb="rope", qk_norm=True, mlp="relu2", tie_weights=False),
}


def _model(options: dict, large: bool = True) -> GPT:
    torch.manual_seed(0)
    model = FAMILY.build(FAMILY.make_config("tiny", vocab_size=VOCAB, block_size=BLOCK, **options))
    if large:  # context-dependent greedy tokens (see tests/models/test_slot_decoding.py)
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1:
                    p.normal_(0.0, 0.5)
    return model.eval()


def test_defaults_are_the_original_layout_and_old_configs_load():
    old = {"vocab_size": VOCAB, "block_size": BLOCK, "n_layer": 2, "n_head": 2, "n_embd": 64}
    config = GPTConfig.model_validate(old)  # a saved config from before the options
    assert (config.pos_emb, config.qk_norm, config.mlp) == ("learned", False, "gelu")
    assert config.tie_weights
    assert modern_options(config) == []
    keys = set(GPT(config).state_dict())
    assert "wpe.weight" in keys and not any("norm" in k for k in keys)
    assert {k for k in keys if k.startswith("blocks.0.")} == {
        "blocks.0.ln_1.weight", "blocks.0.attn.qkv.weight", "blocks.0.attn.proj.weight",
        "blocks.0.ln_2.weight", "blocks.0.mlp.fc.weight", "blocks.0.mlp.proj.weight"}


def test_option_validation_names_the_field():
    with pytest.raises(ValueError, match="mlp"):
        GPTConfig(vocab_size=VOCAB, mlp="tanh")
    with pytest.raises(ValueError, match="even head size"):
        GPTConfig(vocab_size=VOCAB, n_embd=30, n_head=2, pos_emb="rope")
    rope = GPT(GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, pos_emb="rope"))
    assert rope.wpe is None and "wpe.weight" not in rope.state_dict()
    swiglu = GPT(GPTConfig(vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=48, mlp="swiglu"))
    gelu = GPT(GPTConfig(vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=48))
    n = lambda m: sum(p.numel() for p in m.blocks.parameters())  # noqa: E731
    assert abs(n(swiglu) - n(gelu)) / n(gelu) < 0.02  # the same parameters, about


@pytest.mark.parametrize("name", OPTIONS)
def test_each_option_trains(name):
    model = _model(OPTIONS[name], large=False).train()
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, VOCAB, (8, BLOCK), generator=g)
    batch = (x, torch.roll(x, -1, dims=1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(30):
        loss = FAMILY.loss(model, batch)["loss"]
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.8 * first


@pytest.mark.parametrize("name", OPTIONS)
def test_cached_decoding_equals_the_full_forward(name):
    model = _model(OPTIONS[name])
    ids = torch.randint(0, VOCAB, (2, BLOCK), generator=torch.Generator().manual_seed(2))
    full = model(ids)
    cache = KVCache(model.config, 2, torch.float32, torch.device("cpu"))
    parts = [model(ids[:, :5], cache)] + [model(ids[:, t : t + 1], cache) for t in range(5, BLOCK)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=1e-4)


def _alone(model: GPT, prompt: torch.Tensor, n: int) -> list[int]:
    req = TokenRequest(prompt_ids=prompt[None], max_new_tokens=n, temperature=0.0)
    return [int(t) for t in FAMILY.sample(model, req, torch.Generator())]


@pytest.mark.parametrize("name", ["rope", "qk_norm", "all"])
def test_greedy_through_slots_equals_sample(name):
    """Rows at different positions in one step, each refilled (positions from 0 again) when its
    context overflows at its own step: each gets ``sample``'s tokens for its prompt alone."""
    model = _model(OPTIONS[name])
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, VOCAB, (n,), generator=g) for n in (3, 11, 7)]
    n = 2 * BLOCK + 5
    decoder = SlotKVCache(model, 3)
    logits = torch.stack([decoder.prefill(s, p) for s, p in enumerate(prompts)])
    got: list[list[int]] = [[], [], []]
    for _ in range(n):
        tokens = logits.argmax(dim=-1)
        for s in range(3):
            got[s].append(int(tokens[s]))
        logits = decoder.step([0, 1, 2], tokens)
    for s, prompt in enumerate(prompts):
        assert got[s] == _alone(model, prompt, n), f"slot {s}"
    assert len(set(got[0])) > 1


def test_exports_refuse_what_they_cannot_express():
    from genloop.hub.export import gpt2_config
    from genloop.hub.onnx import decoder_of

    rope = GPTConfig(vocab_size=VOCAB, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16, pos_emb="rope")
    with pytest.raises(InvalidInput, match="pos_emb=rope"):
        gpt2_config(rope)
    with pytest.raises(InvalidInput, match="pos_emb=rope"):
        decoder_of(GPT(rope))
    relu2 = rope.model_copy(update={"pos_emb": "learned", "mlp": "relu2"})
    with pytest.raises(InvalidInput, match="mlp=relu2"):
        gpt2_config(relu2)
    decoder_of(GPT(relu2))  # the ONNX decoder calls the block's own MLP: any works
