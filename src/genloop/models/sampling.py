"""Logit filters: pure functions from a model's next-token logits to the token it emits.

Every text family's ``sample``, its slot decoder and the serving batcher pick tokens through
``sample_next`` (or ``next_token_probs`` when one distribution is drawn from row by row with
per-sequence generators), so the same settings and generator give the same tokens on every path.
Order of operations: repetition penalty (CTRL, Keskar et al. 2019), frequency and presence
penalties and logit bias (OpenAI's, ``adjust_logits``), temperature (after shifting the largest
logit to 0), top-k, top-p (nucleus, Holtzman et al. 2020), softmax, one draw. Temperature 0 is
greedy (argmax after the penalties and bias). ``token_logprobs`` reads the model's own
distribution, before any of these.
"""

from __future__ import annotations

import torch

from genloop.models.family import Generators, TokenRequest


def next_token(logits: torch.Tensor, generator: Generators, request: TokenRequest,
               ids: torch.Tensor) -> torch.Tensor:
    """``sample_next`` with a text request's settings: the next ids (B,) after ``ids`` (B, T),
    the prompt and what was generated so far (a family's ``sample`` calls this every step)."""
    return sample_next(
        logits, generator, temperature=request.temperature, top_k=request.top_k,
        top_p=request.top_p, repetition_penalty=request.repetition_penalty, history=ids,
        frequency_penalty=request.frequency_penalty, presence_penalty=request.presence_penalty,
        generated=ids[:, request.prompt_ids.size(1):], logit_bias=request.logit_bias,
    )


def sample_next(
    logits: torch.Tensor,
    generator: Generators | None,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    history: torch.Tensor | None = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    generated: torch.Tensor | None = None,
    logit_bias: dict[int, float] | None = None,
) -> torch.Tensor:
    """Pick the next token of each row of ``logits`` (B, V) -> (B,). Temperature 0 is greedy.

    ``generator`` is one generator for the whole batch, or one per row: then row i is drawn
    with generator i alone, exactly as it would be in a batch of one, so each row's tokens
    depend only on its own seed (the per-choice seeding every face shares). ``history`` (B, T)
    is what the repetition penalty reads (prompt and generated ids), ``generated`` (B, G) what
    the frequency and presence penalties count (the ids sampled so far, as OpenAI counts them).
    """
    logits = adjust_logits(logits, repetition_penalty=repetition_penalty, history=history,
                           frequency_penalty=frequency_penalty, presence_penalty=presence_penalty,
                           generated=generated, logit_bias=logit_bias)
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = next_token_probs(logits, temperature=temperature, top_k=top_k, top_p=top_p)
    if isinstance(generator, torch.Generator) or generator is None:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    if len(generator) != probs.size(0):
        raise ValueError(f"{len(generator)} generators for {probs.size(0)} rows")
    return torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=g)[:, 0]
                      for i, g in enumerate(generator)])


def next_token_probs(
    logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    history: torch.Tensor | None = None,
) -> torch.Tensor:
    """The distribution ``sample_next`` draws from when temperature > 0, (B, V).

    Row by row, so a batcher can compute it once for many sequences with the same settings and
    then draw each row with that sequence's own generator.
    """
    logits = adjust_logits(logits, repetition_penalty=repetition_penalty, history=history)
    # shift first, so a tiny temperature cannot overflow the largest logit to inf (→ NaN); and
    # keep it above zero in float32 (1e-300 rounds to 0: 0/0 = NaN); at 1e-6 it is argmax already
    logits = (logits - logits.amax(dim=-1, keepdim=True)) / max(temperature, 1e-6)
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None and top_p < 1.0:
        logits = filter_top_p(logits, top_p)
    return torch.softmax(logits, dim=-1)


def adjust_logits(
    logits: torch.Tensor,
    *,
    repetition_penalty: float = 1.0,
    history: torch.Tensor | None = None,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
    generated: torch.Tensor | None = None,
    logit_bias: dict[int, float] | None = None,
) -> torch.Tensor:
    """The logits a token is chosen from, (B, V) float32: the repetition penalty, then the
    frequency and presence penalties, then the logit bias; the input is left as it was."""
    logits = logits.float()
    if repetition_penalty != 1.0 and history is not None:
        logits = apply_repetition_penalty(logits, history, repetition_penalty)
    if (frequency_penalty or presence_penalty) and generated is not None and generated.numel():
        logits = apply_frequency_presence(logits, generated, frequency_penalty, presence_penalty)
    if logit_bias:
        logits = apply_logit_bias(logits, logit_bias)
    return logits


def apply_frequency_presence(logits: torch.Tensor, generated: torch.Tensor, frequency: float,
                             presence: float) -> torch.Tensor:
    """OpenAI's penalties: ``logit[j] - c[j] * frequency - (c[j] > 0) * presence``, where c[j]
    counts token j in each row of ``generated`` (B, G), the ids sampled so far."""
    counts = torch.zeros_like(logits).scatter_add_(
        1, generated.to(torch.long), torch.ones(generated.shape, dtype=logits.dtype,
                                                device=logits.device))
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def apply_logit_bias(logits: torch.Tensor, bias: dict[int, float]) -> torch.Tensor:
    """Add ``bias[j]`` to the logit of token j in every row (OpenAI's ``logit_bias``: -100 bans a
    token in practice, 100 makes it all but certain). Ids outside the vocabulary are an error."""
    ids = torch.tensor(list(bias.keys()), dtype=torch.long, device=logits.device)
    if ids.numel() and not (0 <= int(ids.min()) and int(ids.max()) < logits.size(-1)):
        raise ValueError(f"logit_bias: token ids must be in 0..{logits.size(-1) - 1}")
    values = torch.tensor(list(bias.values()), dtype=logits.dtype, device=logits.device)
    return logits.index_add(-1, ids, values.expand(logits.size(0), -1))


def token_logprobs(logits: torch.Tensor, chosen: torch.Tensor, top: int
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The model's own log-probabilities at this step: ``log_softmax(logits)`` (B, V), before
    penalties, bias, temperature and filters. Returns the chosen tokens' (B,), and the ``top``
    most likely ids (B, top) with their log-probabilities (B, top), most likely first."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(1, chosen.to(torch.long).view(-1, 1))[:, 0]
    values, ids = torch.topk(logp, min(max(top, 0), logp.size(-1)), dim=-1)
    return picked, ids, values


def apply_repetition_penalty(logits: torch.Tensor, history: torch.Tensor, penalty: float):
    """CTRL's penalty (Keskar et al. 2019): divide positive, multiply negative logits of seen ids."""
    seen = torch.gather(logits, 1, history)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, history, seen)


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties at the k-th value are kept too)."""
    k = min(max(k, 1), logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al. 2020): the smallest set of tokens whose mass reaches p."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # drop a token when the mass before it already reaches p; the top token is always kept
    drop_sorted = (cum - torch.softmax(sorted_logits, dim=-1)) >= p
    drop_sorted[..., 0] = False  # even when p is below float32's smallest number
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


__all__ = ["adjust_logits", "apply_frequency_presence", "apply_logit_bias",
           "apply_repetition_penalty", "filter_top_k", "filter_top_p", "next_token_probs",
           "sample_next", "token_logprobs"]
