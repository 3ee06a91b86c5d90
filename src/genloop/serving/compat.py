"""OpenAI's optional fields on the text routes, mapped onto the core's names (docs/api.md, the
fields table): token-id prompts, ``max_completion_tokens``, the penalties and ``logit_bias``,
``echo``, and the two shapes of ``logprobs`` (completions' legacy lists, chat's per-token
objects). Fields no language model can honour are refused in ``schemas`` already.

Log-probabilities are the model's own log-softmax at each step (``models.sampling.token_logprobs``),
before penalties, bias, temperature and top-k/top-p: they describe the model, whatever the
sampling settings (OpenAI's reference does not say; this is the usual reading).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from genloop.errors import InvalidInput
from genloop.generation.text import TokenLogprob
from genloop.serving.schemas import ChatBody, CompletionBody
from genloop.tokenizers import Tokenizer


def normalized(body: CompletionBody | ChatBody) -> CompletionBody | ChatBody:
    """``body`` with ``max_tokens`` the one length limit (chat's ``max_completion_tokens`` is its
    newer name), and the combinations genloop cannot honour refused."""
    if isinstance(body, ChatBody) and body.max_completion_tokens is not None:
        if "max_tokens" in body.model_fields_set and body.max_tokens != body.max_completion_tokens:
            raise InvalidInput("max_completion_tokens: differs from max_tokens (give one)")
        return body.model_copy(update={"max_tokens": body.max_completion_tokens})
    if isinstance(body, CompletionBody) and body.echo and body.logprobs is not None:
        raise InvalidInput("echo: this model does not support echo with logprobs "
                           "(the prompt's log-probabilities are not computed)")
    return body


def completion_prompt(body: CompletionBody, tokenizer: Tokenizer) -> str | list[str]:
    """The prompt as text: token ids (a list, or a list of lists) are checked against the model's
    vocabulary and decoded by its tokenizer (the text is what is recorded, and encoded again)."""
    prompt = body.prompt
    if isinstance(prompt, str):
        return prompt
    if not prompt or isinstance(prompt[0], str):
        return [p for p in prompt if isinstance(p, str)]  # a list of texts
    lists: list[list[int]] = ([[i for i in prompt if isinstance(i, int)]]
                              if isinstance(prompt[0], int)
                              else [p for p in prompt if isinstance(p, list)])
    texts = []
    for ids in lists:
        bad = [i for i in ids if not 0 <= i < tokenizer.vocab_size]
        if bad:
            raise InvalidInput(f"prompt: token id {bad[0]} is outside this model's vocabulary "
                               f"(0..{tokenizer.vocab_size - 1})")
        texts.append(tokenizer.decode(ids))
    return texts[0] if isinstance(prompt[0], int) else texts


def sampling_fields(body: CompletionBody | ChatBody) -> dict[str, Any]:
    """The TextRequest fields of the penalties, the bias and the logprobs asked for."""
    if isinstance(body, ChatBody):
        logprobs = (body.top_logprobs or 0) if body.logprobs else None
    else:
        logprobs = body.logprobs
    return {"frequency_penalty": body.frequency_penalty or 0.0,
            "presence_penalty": body.presence_penalty or 0.0,
            "logit_bias": body.logit_bias or None, "logprobs": logprobs}


def token_text(tokenizer: Tokenizer, token: int) -> str:
    """A token as text; the special tokens by name (they decode to '' in the text itself)."""
    if token == tokenizer.eos_id:
        return "<eos>"
    if token == tokenizer.unk_id:
        return "<unk>"
    return tokenizer.decode([token])


def completion_logprobs(tokenizer: Tokenizer, entries: Sequence[TokenLogprob], before: list[int],
                        offset: int) -> dict[str, Any]:
    """Completions' ``logprobs`` of ``entries``, the tokens after ``before`` (the choice's tokens
    already sent); ``text_offset`` counts characters from the start of the prompt (``offset``
    is the prompt's length)."""
    ids = list(before)
    tokens, offsets = [], []
    for e in entries:
        offsets.append(offset + len(tokenizer.decode(ids)))
        ids.append(e.token)
        tokens.append(token_text(tokenizer, e.token))
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries],
            "top_logprobs": [{token_text(tokenizer, t): lp for t, lp in e.top} for e in entries],
            "text_offset": offsets}


def _bytes(text: str) -> list[int] | None:
    if text in ("<eos>", "<unk>") or "\ufffd" in text:
        return None  # no bytes of its own: a special token, or part of a character
    return list(text.encode("utf-8"))


def chat_logprobs(tokenizer: Tokenizer, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Chat's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}], "refusal"}``."""
    content = []
    for e in entries:
        text = token_text(tokenizer, e.token)
        top = [{"token": (t := token_text(tokenizer, i)), "logprob": lp, "bytes": _bytes(t)}
               for i, lp in e.top]
        content.append({"token": text, "logprob": e.logprob, "bytes": _bytes(text),
                        "top_logprobs": top})
    return {"content": content, "refusal": None}
