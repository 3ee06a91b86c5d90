"""OpenAI's penalties, logit bias and logprobs in the core decoding paths, through a tiny real GPT
and LSTM (random weights): the batcher (HTTP) and the family's sample loop (CLI, Python) give the
same texts for the same penalties, bias and seed; the batcher's logprobs are the model's own
log-softmax at each step; an id outside the vocabulary is the caller's error on both paths."""

from __future__ import annotations

import pytest
import torch

from genloop.errors import InvalidInput
from genloop.generation.batching import Batcher
from genloop.generation.text import TextRequest, generate_texts

from .test_batching import Collector, tiny

pytestmark = pytest.mark.usefixtures("one_thread")
EXTRA = {"frequency_penalty": 1.5, "presence_penalty": 0.5, "logit_bias": {5: 3.0}}


@pytest.fixture(scope="module")
def tok():
    from genloop.tokenizers import CharTokenizer

    from .test_batching import CORPUS

    return CharTokenizer.train(CORPUS)


def run(batcher: Batcher, request: TextRequest, choices: int) -> Collector:
    c = Collector()
    c.choices = choices
    batcher.submit(request, c)
    assert c.done.wait(60) and not c.errors, c.errors
    return c


@pytest.mark.parametrize("family_name", ["gpt", "lstm"])
def test_penalties_and_bias_decode_alike_in_the_batcher_and_the_sample_loop(tok, family_name):
    family, model = tiny(family_name, tok)
    batcher = Batcher(family, model, tok, max_batch=4)
    request = TextRequest(prompt=["the ", "To b"], max_new_tokens=12, temperature=0.9, seed=3,
                          num_samples=2, **EXTRA)
    alone = [o.text for o in generate_texts(family, model, tok, request)]
    batched = run(batcher, request, 4)
    assert [batched.outputs[i].text for i in range(4)] == alone
    plain = [o.text for o in generate_texts(family, model, tok,
                                            request.model_copy(update={k: TextRequest.model_fields[k].default
                                                                       for k in EXTRA}))]
    assert plain != alone, "the penalties and the bias changed nothing"


@pytest.mark.parametrize("family_name", ["gpt", "lstm"])
def test_batcher_logprobs_are_the_models_log_softmax(tok, family_name):
    family, model = tiny(family_name, tok)
    batcher = Batcher(family, model, tok, max_batch=4)
    request = TextRequest(prompt="the ", max_new_tokens=10, temperature=0.9, seed=1, logprobs=4,
                          **EXTRA)
    out = run(batcher, request, 1).outputs[0]
    assert out.logprobs is not None and len(out.logprobs) == out.tokens
    prompt = tok.encode("the ")
    with torch.no_grad():
        logits = model(torch.tensor([prompt + [e.token for e in out.logprobs]]))
    logits = logits[0] if isinstance(logits, tuple) else logits  # lstm: (logits, state)
    logp = torch.log_softmax(logits[0].float(), dim=-1)
    for i, entry in enumerate(out.logprobs):
        step = logp[len(prompt) - 1 + i]
        assert entry.logprob == pytest.approx(step[entry.token].item(), abs=1e-5)
        best = step.topk(4)
        assert [t for t, _ in entry.top] == best.indices.tolist()
        assert [lp for _, lp in entry.top] == pytest.approx(best.values.tolist(), abs=1e-5)


def test_logit_bias_ids_are_checked_against_the_vocabulary(tok):
    family, model = tiny("gpt", tok)
    request = TextRequest(prompt="the ", max_new_tokens=2, seed=1,
                          logit_bias={tok.vocab_size: 1.0})
    with pytest.raises(InvalidInput, match="logit_bias: token id"):
        generate_texts(family, model, tok, request)
    with pytest.raises(InvalidInput, match="logit_bias: token id"):
        Batcher(family, model, tok).submit(request, lambda event: None)


def test_the_sample_loop_says_logprobs_come_from_the_batcher(tok):
    family, model = tiny("gpt", tok)
    with pytest.raises(InvalidInput, match="logprobs"):
        generate_texts(family, model, tok, TextRequest(prompt="the ", seed=1, logprobs=2))
