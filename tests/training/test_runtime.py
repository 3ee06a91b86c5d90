"""The loop's runtime: torch's global RNG seeded through a generator, the caller's left alone."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from genloop.training.runtime import seeded_rng

SRC = Path(__file__).resolve().parents[2] / "src"


def test_seeded_rng_draws_what_manual_seed_would_and_restores_the_callers_rng():
    torch.manual_seed(7)  # the old way, here in a test: the numbers initialisation used to see
    want = torch.rand(5)
    before = torch.get_rng_state()
    with seeded_rng(7):
        got = torch.rand(5)
        with seeded_rng(None):  # None: the state as it is, isolated
            inner = torch.rand(3)
        assert torch.equal(torch.rand(3), inner)  # the inner block's draws did not advance it
    assert torch.equal(got, want)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded_rng(8):
        assert not torch.equal(torch.rand(5), want)


def test_no_library_code_seeds_the_global_rng():
    offenders = [f"{p.relative_to(SRC)}:{i}" for p in SRC.rglob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
                 if re.search(r"\btorch\.(cuda\.)?manual_seed(_all)?\(", line)]
    assert offenders == [], "randomness is passed in (a torch.Generator): " + ", ".join(offenders)
