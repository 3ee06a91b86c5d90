"""The seq2seq family (models/seq2seq.py): pairs batches split into source and target, scoring by
teacher forcing, vocabularies, beam search, and the faces (Python, HTTP plain and streamed) on a
model trained through the loop. The common contract checks run in test_contract.py."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import genloop
from genloop.errors import InvalidInput
from genloop.generation.text import TextRequest, generate_texts
from genloop.models import gpt, seq2seq
from genloop.models.family import sequence_batch
from genloop.models.seq2seq import START, split_pairs
from genloop.tokenizers import train_tokenizer

from ..conftest import module_workspace  # noqa: TID252

VOCAB = 12
pytestmark = pytest.mark.usefixtures("one_thread")


def _model(seed: int = 0, big: bool = False, **config) -> seq2seq.Seq2Seq:
    cfg = seq2seq.FAMILY.make_config("tiny", vocab_size=VOCAB, block_size=16, **config)
    torch.manual_seed(seed)
    model = seq2seq.build(cfg).eval()
    if big:  # large weights: every token depends on the context, so wiring shows in the output
        with torch.no_grad():
            for p in model.parameters():
                if p.ndim > 1:
                    p.normal_(0.0, 0.5)
    return model


RECORDS = [([3, 4, 5], [6, 7, 1]), ([2], [8, 9, 10, 11, 1]), ([5, 6, 7, 8, 9], [1])]


def _batch(records=RECORDS, block: int = 16):
    return sequence_batch([np.array(p) for p, _ in records], [np.array(c) for _, c in records],
                          block, pad=1)


def test_a_pairs_batch_splits_into_each_records_source_and_target():
    b = split_pairs(_batch())
    for i, (prompt, completion) in enumerate(RECORDS):
        assert b.source[i][b.source_mask[i]].tolist() == prompt
        assert b.targets[i][b.mask[i]].tolist() == completion
        assert b.inputs[i, 0] == START
        assert b.inputs[i, 1:len(completion)].tolist() == completion[:-1]
    assert int(b.mask.sum()) == int(_batch().mask.sum())  # the same tokens count as for gpt


def test_log_probs_is_teacher_forcing_of_each_record_alone():
    model = _model(big=True)
    got = seq2seq.log_probs(model, _batch())
    assert got.shape == (3,) and got.dtype == torch.float32
    with torch.no_grad():
        for i, (prompt, completion) in enumerate(RECORDS):
            inputs = torch.tensor([[START, *completion[:-1]]])
            logits = model(torch.tensor([prompt]), inputs)[0].log_softmax(-1)
            alone = logits[torch.arange(len(completion)), torch.tensor(completion)].sum()
            torch.testing.assert_close(got[i], alone)
    tokens = sum(len(c) for _, c in RECORDS)
    torch.testing.assert_close(seq2seq.loss(model, _batch())["loss"], -got.sum() / tokens)


def test_the_source_conditions_every_target_position():
    model = _model(big=True)
    a = seq2seq.log_probs(model, _batch([([3, 4, 5], [6, 7, 1])]))
    b = seq2seq.log_probs(model, _batch([([3, 4, 9], [6, 7, 1])]))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("shared,tied", [(True, True), (False, True), (False, False)])
def test_vocabularies_shared_or_separate_and_the_head_tied_or_not(shared, tied):
    model = _model(shared_vocab=shared, tie_weights=tied)
    model.train()
    assert (model.src_wte is None) == shared
    assert (model.head.weight is model.wte.weight) == tied
    if not shared:  # the encoder reads its own table: changing it changes the scores
        before = seq2seq.log_probs(model, _batch())
        with torch.no_grad():
            model.src_wte.weight.normal_(0.0, 0.5)
        assert not torch.allclose(before, seq2seq.log_probs(model, _batch()))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = seq2seq.loss(model, _batch())["loss"]
        losses.append(out.item())
        opt.zero_grad()
        out.backward()
        opt.step()
    assert losses[-1] < 0.6 * losses[0], losses


def _score(model, source: list[int], target: list[int]) -> float:
    with torch.no_grad():
        logits = model(torch.tensor([source]), torch.tensor([[START, *target[:-1]]]))[0]
        return float(logits.log_softmax(-1)[torch.arange(len(target)), torch.tensor(target)].sum())


def test_beam_search_wide_enough_finds_the_most_likely_target():
    """With length_penalty 0 (summed log-probs) and a beam per prefix, beam search is exhaustive:
    its answer is the best of every target of at most 3 tokens (ended by 0, or cut at 3)."""
    model = _model(seed=3, big=True)
    source, end, n = [2, 5, 7], 0, 3
    found = seq2seq.beam_search(model, torch.tensor(source), VOCAB ** 2, n, {end}, length_penalty=0.0)
    others = [t for t in range(VOCAB) if t != end]
    candidates = [[*p, end] for k in range(n) for p in itertools.product(others, repeat=k)]
    candidates += [list(p) for p in itertools.product(others, repeat=n)]
    best = max(candidates, key=lambda t: _score(model, source, t))
    assert found == best
    # a narrower search is at most as good, and never better than the best
    narrow = seq2seq.beam_search(model, torch.tensor(source), 2, n, {end}, length_penalty=0.0)
    assert _score(model, source, narrow) <= _score(model, source, best) + 1e-6


def test_beam_search_past_the_context_restarts_like_sampling():
    model = _model(seed=1, big=True)
    out = seq2seq.beam_search(model, torch.tensor([4, 5]), 3, 40, set(), length_penalty=1.0)
    assert len(out) == 40  # 16-token context: restarted from its last half, as sample does


# --- through the text path: requests, tokenizers ------------------------------------------------


def test_num_beams_through_the_text_path_is_deterministic_and_checked():
    tok = train_tokenizer("char", ["abcdefghij"])
    cfg = seq2seq.FAMILY.make_config("tiny", vocab_size=tok.vocab_size, block_size=16)
    torch.manual_seed(0)
    model = seq2seq.build(cfg).eval()
    one = dict(prompt=["abc", "de"], max_new_tokens=8)
    a = generate_texts(seq2seq.FAMILY, model, tok, TextRequest(**one, num_beams=3, seed=1))
    b = generate_texts(seq2seq.FAMILY, model, tok, TextRequest(**one, num_beams=3, seed=2))
    assert [o.text for o in a] == [o.text for o in b]  # the seed plays no part
    assert [o.prompt for o in a] == ["abc", "de"]
    ids = seq2seq.beam_search(model, torch.tensor(tok.encode("abc")), 3, 8, {tok.eos_id})
    assert a[0].text == tok.decode([i for i in ids if i != tok.eos_id])
    with pytest.raises(ValueError, match="num_samples=1"):
        TextRequest(prompt="a", num_beams=2, num_samples=2)
    gpt_model = gpt.build(gpt.FAMILY.make_config("tiny", vocab_size=tok.vocab_size))
    with pytest.raises(InvalidInput, match="'gpt' has no beam search"):
        generate_texts(gpt.FAMILY, gpt_model, tok, TextRequest(prompt="a", num_beams=2))
    # a sampling request's dump has no num_beams key (its records keep their content hash)
    assert "num_beams" not in TextRequest(prompt="a").model_dump()
    assert TextRequest(prompt="a", num_beams=2).model_dump()["num_beams"] == 2


# --- trained through the loop, served on every face --------------------------------------------------


WORDS = ["river", "stone", "cloud", "maple", "tiger", "lemon", "night", "ocean", "piano", "grape",
         "amber", "frost", "quiet", "light", "sugar", "brick", "wheat", "storm", "coral", "flame"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny seq2seq trained (through the loop, on a pairs file) to reverse words."""
    from genloop.store import Store

    root = tmp_path_factory.mktemp("seq2seq")
    with module_workspace(root / "home"):
        src = root / "reverse.jsonl"
        rows = [{"prompt": a + b, "completion": (a + b)[::-1]} for a in WORDS for b in WORDS[:6]]
        src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        result = genloop.train({
            "name": "rev", "data": {"kind": "pairs", "source": str(src)},
            "model": {"family": "seq2seq", "preset": "tiny", "config": {"block_size": 24}},
            "train": {"steps": 150, "batch_size": 16, "lr": 3e-3, "warmup_steps": 10,
                      "eval_every": 150, "eval_batches": 2, "checkpoint_every": 150,
                      "tensorboard": False, "threads": 1},
        })
        store = Store()
        yield {"ref": result.model_ref, "metrics": result.metrics, "store": store}
        store.close()


def test_the_loop_trains_it_on_pairs(trained):
    m = trained["metrics"]
    assert m["val_loss"] < 0.6 * math.log(30), m  # far below a uniform guess over ~30 characters
    assert math.isfinite(m["completion_bits_per_char"])


def test_every_face_gives_the_same_text(trained):
    from genloop.serving.app import create_app
    from genloop.serving.settings import ServeConfig

    model = genloop.load(trained["ref"])
    sampled = model.generate("stonecloud", max_new_tokens=12, temperature=0.8, seed=5)[0].text
    streamed = "".join(model.stream("stonecloud", max_new_tokens=12, temperature=0.8, seed=5))
    beams = model.generate("stonecloud", max_new_tokens=12, num_beams=4)[0]
    assert streamed == sampled
    assert beams.finish_reason == "stop" and beams.text
    with TestClient(create_app(ServeConfig(auth=False), store=trained["store"])) as http:
        body = {"model": trained["ref"], "prompt": "stonecloud", "max_tokens": 12,
                "temperature": 0.8, "seed": 5}
        r = http.post("/v1/completions", json=body)  # the batcher: seq2seq's slot decoder
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["text"] == sampled
        with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as s:
            chunks = [json.loads(line[6:]) for line in s.iter_lines() if line.startswith("data: {")]
        assert "".join(c["choices"][0]["text"] for c in chunks) == sampled
        r = http.post("/v1/completions", json={**body, "num_beams": 4})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        assert choice["text"] == beams.text
        record = http.get(f"/v1/generations/{choice['generation_id']}").json()
        assert record["request"]["num_beams"] == 4
        r = http.post("/v1/completions", json={**body, "num_beams": 4, "stream": True})
        assert r.status_code == 400 and "stream" in r.text
