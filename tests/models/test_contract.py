"""The common contract every registered model family fulfils, run on each family's ``tiny`` preset.

A family that cannot pass a check declares it in ``family.exempt`` (check name -> reason); this
test reads that and never names a family.
"""

from __future__ import annotations

import math

import pytest
import torch

from genloop.models.family import (
    CaptionRequest,
    ImageBatch,
    ImageRequest,
    ImageTextBatch,
    SequenceBatch,
    TextModelConfig,
    TokenRequest,
)
from genloop.models.io import load_weights, save_weights
from genloop.models.registry import FAMILIES
from genloop.training.preference_batches import PreferenceBatch

VOCAB = 32
# text families are the token samplers (``streaming``: their sample yields token ids); the rest
# draw images
CHECKS = ("config_roundtrip", "save_load", "loss_falls", "seeded_sample", "kv_cache", "slot_decoding",
          "log_probs", "score")
# image families are checked on 8×8 single-channel images with 3 classes, class-conditional
IMAGE_FILL = {"image_size": 8, "channels": 1, "num_classes": 3, "conditional": True}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only fight


def _text(family) -> bool:
    """Whether the family reads tokens (a text config): the samplers and the scorers."""
    return issubclass(family.config, TextModelConfig)


def _reads_images(family) -> bool:
    """An image-conditioned family (a captioner): it reads images and writes token ids."""
    return family.conditioning == "image"


def _config(family):
    fill = {"vocab_size": VOCAB} if _text(family) else dict(IMAGE_FILL)
    if not _text(family) and "vocab_size" in family.config.model_fields:  # reads captions too
        fill["vocab_size"] = VOCAB
    fill = {k: v for k, v in fill.items() if k in family.config.model_fields}
    return family.make_config("tiny", **fill)


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, tuple) else out  # recurrent families return a state too


def _build(family, seed: int = 0):
    config = _config(family)
    torch.manual_seed(seed)
    return config, family.build(config)


def _batch(config, seed: int = 1234) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    T = min(32, config.block_size)
    data = torch.randint(0, VOCAB, (4, T + 1), generator=g)
    return data[:, :-1], data[:, 1:]


def _image_batch(seed: int = 1234, family=None) -> ImageBatch:
    """Eight fixed images in [-1, 1] with labels, and a generator for the objective's noise
    (re-made from the same seed each call, so the noise is fixed too and the batch can be learnt);
    for a text-conditioned family, with fixed captions of 2..5 tokens (right-padded, masked)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(8, 1, 8, 8, generator=g).round() * 2 - 1
    labels = torch.arange(8) % 3
    if family is None or family.conditioning != "text":
        return ImageBatch(images, labels, torch.Generator().manual_seed(seed + 1))
    ids, mask = _prompts(8, seed)
    return ImageTextBatch(images, labels, torch.Generator().manual_seed(seed + 1), captions=ids,
                          caption_mask=mask)


def _prompts(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fixed token prompts of 2..5 tokens, right-padded with id 1, and their masks."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (n, 5), generator=g)
    mask = torch.arange(5)[None] < (2 + torch.arange(n) % 4)[:, None]
    return torch.where(mask, ids, 1), mask


def _caption_batch(seed: int = 1234) -> ImageTextBatch:
    """The eight fixed images, each with a fixed random caption of 3..10 tokens (right-padded
    with the end-of-text id 1, as every ImageTextBatch is)."""
    images = _image_batch(seed)
    g = torch.Generator().manual_seed(seed + 2)
    lengths = torch.randint(3, 11, (8,), generator=g)
    mask = torch.arange(10)[None] < lengths[:, None]
    captions = torch.randint(2, VOCAB, (8, 10), generator=g).masked_fill(~mask, 1)
    return ImageTextBatch(images.images, images.labels, images.generator, captions=captions,
                          caption_mask=mask)


def _draw_captions(family, model, seed: int) -> list[list[int]]:
    req = CaptionRequest(images=_image_batch().images[:4], max_new_tokens=16, temperature=1.0,
                         top_k=20)
    return family.sample(model, req, [torch.Generator().manual_seed(seed + i) for i in range(4)])


def _preference_batch(config) -> PreferenceBatch:
    """Four fixed pairs: random chosen and rejected rows, the second half of each masked."""
    (x, y), (x2, y2) = _batch(config, seed=1234), _batch(config, seed=4321)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, x.size(1) // 2:] = True
    return PreferenceBatch(SequenceBatch(x, y, mask), SequenceBatch(x2, y2, mask))


def _pairs_batch(config) -> SequenceBatch:
    """Four fixed prompt → completion rows as every pairs batch is: prompts of 5..8 tokens, the
    rest of the row the completion, the last row shorter (right-padded, masked out)."""
    x, y = _batch(config, seed=99)
    mask = torch.zeros_like(x, dtype=torch.bool)
    for i, prompt in enumerate((5, 6, 7, 8)):
        mask[i, prompt - 1:] = True
    mask[3, -4:] = False
    return SequenceBatch(x, y, mask)


def _conditional(family) -> bool:
    """A text family that reads prompt → completion pairs only (an encoder–decoder): it is
    trained and scored on masked pairs batches, not on plain (x, y) windows."""
    return _text(family) and "text" not in family.kinds and "preferences" not in family.kinds


def _any_batch(family, config):
    if family.score is not None:  # a scorer learns from preferences
        return _preference_batch(config)
    if _conditional(family):
        return _pairs_batch(config)
    if _reads_images(family):
        return _caption_batch()
    return _batch(config) if _text(family) else _image_batch(family=family)


def _draw(family, model, prompt: torch.Tensor, n: int, seed: int | None, **kw) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed) if seed is not None else torch.Generator()
    req = TokenRequest(prompt_ids=prompt, max_new_tokens=n, **kw)
    return torch.stack(list(family.sample(model, req, gen)), dim=1)


def _draw_images(family, model, seed: int) -> torch.Tensor:
    req = ImageRequest(num_samples=4, labels=torch.tensor([0, 1, 2, 0]), steps=4)
    if family.conditioning == "text":
        ids, mask = _prompts(4)
        req = ImageRequest(num_samples=4, steps=4, prompt_ids=ids, prompt_mask=mask,
                           guidance_scale=2.0)
    return family.sample(model, req, torch.Generator().manual_seed(seed))


def _outputs(family, model, config) -> torch.Tensor:
    """What the network computes, deterministically: logits of a batch, or a seeded sample."""
    if family.score is not None:  # a scorer: the scores of the chosen rows
        return family.score(model, _preference_batch(config).chosen)
    if family.embed is not None:  # an embedder: the vectors of a batch
        x = _batch(config)[0]
        return family.embed(model, x, torch.ones_like(x, dtype=torch.bool))
    if family.streaming and _conditional(family):  # completion log-likelihoods given sources
        return family.log_probs(model, _pairs_batch(config))
    if family.streaming:
        return _logits(model, _batch(config)[0])
    if not family.generative:  # the feature classifier: its logits
        return model(_image_batch().images)
    if _reads_images(family):  # a captioner: its logits of captions given images
        batch = _caption_batch()
        return model(batch.images, batch.captions)
    return _draw_images(family, model, seed=5)


def check_config_roundtrip(family) -> None:
    config = _config(family)
    again = family.config.model_validate(config.model_dump())
    assert again == config
    assert again.model_dump() == config.model_dump()
    # JSON too: that is how config.json stores it
    assert family.config.model_validate_json(config.model_dump_json()) == config


def check_save_load(family, tmp_path) -> None:
    config, model = _build(family, seed=0)
    _, other = _build(family, seed=1)  # different random weights, same shapes
    model.eval()
    other.eval()
    path = tmp_path / "weights.safetensors"
    save_weights(model, path)
    with torch.no_grad():
        assert not torch.equal(_outputs(family, model, config), _outputs(family, other, config))
        load_weights(other, path)
        assert torch.equal(_outputs(family, model, config), _outputs(family, other, config))
    for (k, a), (k2, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(a, b), k


def check_loss_falls(family) -> None:
    config, model = _build(family, seed=0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = family.loss(model, _any_batch(family, config))["loss"]
        assert loss.ndim == 0 and math.isfinite(loss.item())
        losses.append(loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if family.streaming:
        # random tokens start near ln(V); memorising the fixed batch must bring the loss well down
        assert losses[0] == pytest.approx(math.log(VOCAB), rel=0.2)
    assert losses[-1] < 0.8 * losses[0], losses


def check_seeded_sample(family) -> None:
    _, model = _build(family, seed=0)
    model.eval()
    if _reads_images(family):
        a, b, c = (_draw_captions(family, model, s) for s in (7, 7, 8))
        assert len(a) == 4 and all(0 <= t < VOCAB for row in a for t in row)
        assert a == b
        assert a != c  # up to 64 draws from ~20 tokens each
        return
    if not family.streaming:
        a, b, c = (_draw_images(family, model, s) for s in (7, 7, 8))
        assert a.shape == (4, 1, 8, 8) and a.dtype == torch.float32
        assert a.min() >= -1 and a.max() <= 1
        assert torch.equal(a, b)
        assert not torch.equal(a, c)
        return
    prompt = torch.tensor([[2, 3, 4], [5, 6, 7]])
    kw = dict(temperature=1.0, top_k=20, top_p=0.95)
    a = _draw(family, model, prompt, 16, seed=7, **kw)
    b = _draw(family, model, prompt, 16, seed=7, **kw)
    c = _draw(family, model, prompt, 16, seed=8, **kw)
    assert a.shape == (2, 16) and a.dtype == torch.long
    assert ((a >= 0) & (a < VOCAB)).all()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)  # 32 draws from ~20 tokens: equal only by a ~1e-40 chance


def check_kv_cache(family) -> None:
    if not family.kv_cache:
        pytest.skip(f"{family.name} declares no KV cache")
    config, model = _build(family, seed=0)
    model.eval()
    prompt = torch.tensor([[2, 3, 4, 5, 6], [9, 8, 7, 6, 5]])
    # every token predicted from at most block_size tokens: the whole context, no sliding
    n = config.block_size - prompt.size(1) + 1
    cached = _draw(family, model, prompt, n, seed=0, temperature=0.0, use_cache=True)
    uncached = _draw(family, model, prompt, n, seed=0, temperature=0.0, use_cache=False)
    assert cached.shape == (2, n)
    assert torch.equal(cached, uncached)


def check_slot_decoding(family) -> None:
    """Prompts that join one slot decoder at different steps and leave at different steps get
    the greedy tokens ``sample`` gives each alone — past the context for context-limited models."""
    if not family.streaming:
        pytest.skip(f"{family.name} decodes no tokens")
    assert family.slot_decoder is not None, (
        f"text family {family.name} has no slot_decoder (continuous batching): add one or exempt it"
    )
    config = family.make_config("tiny", vocab_size=VOCAB, block_size=16)
    torch.manual_seed(0)
    model = family.build(config).eval()
    with torch.no_grad():  # large weights: greedy tokens then depend on the context
        for p in model.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.5)
    prompts = [torch.tensor([2, 3, 4, 5, 6]), torch.tensor([9]), torch.arange(15) % VOCAB]
    n, joins = [40, 12, 25], [0, 2, 5]
    decoder = family.slot_decoder(model, 2)
    got: list[list[int]] = [[], [], []]
    logits, slot_of, step = {}, {}, 0
    while any(len(got[i]) < n[i] for i in range(3)):
        for i in range(3):  # join when a slot is free; the third waits for the second to leave
            if joins[i] <= step and not got[i] and i not in slot_of and len(slot_of) < decoder.slots:
                slot_of[i] = min(set(range(decoder.slots)) - set(slot_of.values()))
                logits[i] = decoder.prefill(slot_of[i], prompts[i])
        for i in list(slot_of):
            got[i].append(int(logits[i].argmax()))
            if len(got[i]) == n[i]:
                decoder.free(slot_of.pop(i))
        if slot_of:
            rows = sorted(slot_of)
            new = decoder.step([slot_of[i] for i in rows], torch.tensor([got[i][-1] for i in rows]))
            logits.update(zip(rows, new, strict=True))
        step += 1
    for i, prompt in enumerate(prompts):
        alone = _draw(family, model, prompt[None], n[i], seed=0, temperature=0.0)[0].tolist()
        assert got[i] == alone, f"prompt {i}"


def check_log_probs(family) -> None:
    """``log_probs`` sums log p(target_t | inputs_<=t) over the masked positions: minus the
    per-token cross-entropy worked out from the logits; over every position, its mean per token
    is the family's own loss on the same (x, y)."""
    if family.log_probs is None:
        assert "text" not in family.kinds, f"text family {family.name} has no log_probs: add one"
        pytest.skip(f"{family.name} scores no token sequences")
    config, model = _build(family, seed=0)
    model.eval()
    x, y = _batch(config)
    mask = torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) < 0.5
    mask[0] = False  # a sequence with no counted token
    with torch.no_grad():
        logits = _logits(model, x).float()  # (B, T, V)
        log_p = logits.gather(-1, y[..., None]).squeeze(-1) - logits.logsumexp(dim=-1)  # (B, T)
        got = family.log_probs(model, SequenceBatch(x, y, mask))
        assert got.shape == (x.size(0),) and got.dtype == torch.float32
        torch.testing.assert_close(got, torch.where(mask, log_p, 0.0).sum(dim=1))
        assert got[0] == 0 and (got[1:] < 0).all()
        every = family.log_probs(model, SequenceBatch(x, y, torch.ones_like(mask)))
        torch.testing.assert_close(-every.sum() / y.numel(), family.loss(model, (x, y))["loss"])


def check_score(family) -> None:
    """``score`` gives one float per sequence, read where its last completion token is
    predicted: what follows (padding) changes nothing, and a row scores the same alone or in a
    batch; a completion token before that point does change it."""
    if family.score is None:
        pytest.skip(f"{family.name} scores no sequences")
    config, model = _build(family, seed=0)
    model.eval()
    x, y = _batch(config)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, 3:10] = True  # completion targets 3..9: read at position 9
    with torch.no_grad():
        got = family.score(model, SequenceBatch(x, y, mask))
        assert got.shape == (x.size(0),) and got.dtype == torch.float32
        after = x.clone()
        after[:, 10:] = 0  # what follows the last completion token: padding
        torch.testing.assert_close(family.score(model, SequenceBatch(after, y, mask)), got)
        alone = family.score(model, SequenceBatch(x[1:2, :10], y[1:2, :10], mask[1:2, :10]))
        torch.testing.assert_close(alone, got[1:2])
        before = x.clone()
        before[:, 5] = (before[:, 5] + 1) % VOCAB
        assert not torch.allclose(family.score(model, SequenceBatch(before, y, mask)), got)


def test_exemptions_name_known_checks():
    for family in FAMILIES.values():
        unknown = set(family.exempt) - set(CHECKS)
        assert not unknown, f"{family.name} exempts unknown checks {unknown}"
        assert all(reason.strip() for reason in family.exempt.values())


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_contract(name: str, check: str, tmp_path) -> None:
    family = FAMILIES[name]
    if check in family.exempt:
        pytest.skip(f"{name} is exempt from {check}: {family.exempt[check]}")
    if check == "save_load":
        check_save_load(family, tmp_path)
    else:
        globals()[f"check_{check}"](family)
