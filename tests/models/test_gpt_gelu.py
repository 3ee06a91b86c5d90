"""The GELU of the gpt family: its compiled form (x·σ(2u)) is the tanh approximation it replaces."""

import torch
import torch.nn.functional as F

from genloop.models import gpt


def test_the_compiled_form_is_the_tanh_approximation(monkeypatch):
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64)
    eager = gpt.gelu_tanh(x)
    assert torch.equal(eager, F.gelu(x, approximate="tanh"))  # eager: ATen's own kernel
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    compiled_form = gpt.gelu_tanh(x)
    assert not torch.equal(compiled_form, eager)  # the other branch ran
    torch.testing.assert_close(compiled_form, eager, rtol=1e-12, atol=1e-12)
    g = x.clone().requires_grad_()
    gpt.gelu_tanh(g).sum().backward()
    ref = x.clone().requires_grad_()
    F.gelu(ref, approximate="tanh").sum().backward()
    torch.testing.assert_close(g.grad, ref.grad, rtol=1e-10, atol=1e-12)
