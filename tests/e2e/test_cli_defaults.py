"""Every CLI default is its typed model's default, so a default changes in one place: a
parameter named like a field of the models behind its command defaults to that field's default,
and the few flags spelled otherwise than the core's names are mapped once (``options.FLAGS``)."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

from genloop.cli.main import app
from genloop.cli.options import FLAGS, default
from genloop.data.text import TextDataConfig
from genloop.evaluation.image import ImageEvalConfig
from genloop.evaluation.text import EvalConfig
from genloop.generation.image import ImageGenRequest
from genloop.generation.text import TextRequest
from genloop.serving.settings import ServeConfig

# the typed models behind each command, and how many of its parameters at least they own
MODELS = {
    "generate": ([TextRequest, ImageGenRequest], 16),
    "eval": ([ImageEvalConfig, EvalConfig], 6),
    "serve": ([ServeConfig], 9),
    "data prepare": ([TextDataConfig], 3),
}
# a default that depends on the kind of model (text or images): None on the CLI, and the help
# states each kind's default
BY_KIND = {("generate", "num_samples"), ("eval", "num_samples")}
# repeatable on the CLI (one --prompt per prompt, one --logit-bias per token): none given is the
# request's empty prompt, or no bias
REPEATED = {("generate", "prompt"), ("generate", "logit_bias")}


def command(path: str) -> Any:
    """The click command ``genloop <path>`` runs."""
    cmd: Any = typer.main.get_command(app)
    for name in path.split():
        cmd = cmd.get_command(typer.Context(cmd), name)
    return cmd


@pytest.mark.parametrize("path", MODELS)
def test_cli_defaults_are_the_models_defaults(path: str) -> None:
    models, at_least = MODELS[path]
    owned = 0
    for param in command(path).params:
        owners = [m for m in models if param.name in m.model_fields]
        if not owners:
            continue
        owned += 1
        if (path, param.name) in REPEATED:
            assert not param.default and all(not default(m, param.name) for m in owners)
            continue
        if (path, param.name) in BY_KIND:
            assert param.default is None
            for m in owners:
                assert f"{default(m, param.name)})" in (param.help or ""), (param.name, m.__name__)
            continue
        for m in owners:
            if m.model_fields[param.name].is_required():
                assert param.required, (path, param.name)
                continue
            expected = default(m, param.name)
            got = list(param.default) if isinstance(expected, list) else param.default
            assert got == expected, f"{path} --{param.name}: {got!r}, but {m.__name__} says {expected!r}"
    assert owned >= at_least, f"{path}: only {owned} parameters carry the core's names"


def test_one_name_per_concept() -> None:
    """The parameters carry the core's names; a flag spelled otherwise is the one FLAGS gives."""
    for path in MODELS:
        for param in command(path).params:
            assert param.name not in ("guidance", "queue", "samples", "class"), (path, param.name)
            if param.name in FLAGS:
                assert param.opts == [FLAGS[param.name]], (path, param.name, param.opts)
    flags = {(path, p.name): p.opts for path in MODELS for p in command(path).params}
    assert flags["generate", "guidance_scale"] == flags["eval", "guidance_scale"] == ["--guidance"]
    assert flags["generate", "class_label"] == ["--class"] and flags["serve", "max_queue"] == ["--queue"]
