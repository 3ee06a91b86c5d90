"""``genloop import``: tiny GPT-2- and Llama-layout transformers models (random weights, saved with
``save_pretrained``) become ``hf`` versions that compute what transformers computes, generate
seeded and streamed, chat through their own jinja template; bad directories register nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from genloop.errors import InvalidInput
from genloop.generation import service
from genloop.generation.chat import ChatMessage
from genloop.hub.imports import import_model
from genloop.models.modeldir import ModelDir
from genloop.store import Store

from ..conftest import run_cli  # noqa: TID252
from .conftest import save_model, transformers

pytestmark = pytest.mark.usefixtures("one_thread", "workspace")


def _hf(directory: Path):
    return transformers.AutoModelForCausalLM.from_pretrained(directory).eval()


def test_import_computes_what_transformers_computes(hf_dir: Path):
    version = import_model(hf_dir, "tiny")
    assert version.ref == "tiny@1" and version.family == "hf"
    directory = ModelDir(Path(version.path))
    lineage = directory.lineage()
    assert lineage["imported_from"] == str(hf_dir)
    weights = (hf_dir / "model.safetensors").read_bytes()
    assert lineage["files"]["model.safetensors"] == hashlib.sha256(weights).hexdigest()
    assert {"config.json", "tokenizer.json", "tokenizer_config.json"} <= set(lineage["files"])
    assert "Imported from" in directory.card() and lineage["files"]["config.json"] in directory.card()
    model = service.load("tiny")
    ids = torch.tensor([[5, 9, 33, 2, 70, 71], [8, 8, 100, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(model.network(ids), _hf(hf_dir)(ids).logits, rtol=0, atol=1e-5)
    # the tokenizer is the model's own: it encodes as transformers' does
    reference = transformers.AutoTokenizer.from_pretrained(hf_dir)
    text = "ROMEO: wherefore art thou?"
    assert model.tokenizer.encode(text) == reference.encode(text, add_special_tokens=False)
    assert model.tokenizer.eos_id == reference.eos_token_id


def test_greedy_generation_equals_transformers_generate(hf_dir: Path):
    import_model(hf_dir, "tiny")
    model = service.load("tiny")
    prompt = "ROMEO: But soft"
    out = model.generate(prompt, temperature=0.0, max_new_tokens=20, seed=0)[0]
    ids = torch.tensor([model.tokenizer.encode(prompt)])
    reference = _hf(hf_dir).generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=None,
                                     pad_token_id=0)[0, ids.size(1):].tolist()
    eos = model.tokenizer.eos_id
    expected = reference[: reference.index(eos)] if eos in reference else reference
    assert out.tokens == len(expected)
    # a trailing unfinished UTF-8 character is held back by genloop's decoding
    assert out.text == model.tokenizer.decode(expected).rstrip("\ufffd")


def test_seeded_and_streamed(hf_dir: Path):
    import_model(hf_dir, "tiny")
    model = service.load("tiny")
    kw = dict(temperature=1.0, max_new_tokens=16)
    a = model.generate("ROMEO:", seed=11, **kw)[0]
    b = model.generate("ROMEO:", seed=11, **kw)[0]
    c = model.generate("ROMEO:", seed=12, **kw)[0]
    assert a.text == b.text and a.text != c.text
    assert "".join(model.stream("ROMEO:", seed=11, **kw)) == a.text
    # replay from the record gives the same text
    record = Store().list_generations(model.ref)[0]
    assert service.replay(record.id).matches


def test_chat_uses_the_models_jinja_template(hf_dir: Path):
    import_model(hf_dir, "tiny")
    model = service.load("tiny")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    reference = transformers.AutoTokenizer.from_pretrained(hf_dir).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    rendered = model.chat_template.render([ChatMessage(**m) for m in messages])
    assert rendered == reference and rendered.endswith("<|assistant|>")
    # the template's special tokens are tokens, not text
    assert model.tokenizer.encode(rendered)[0] == model.tokenizer.bos_id
    # a long conversation keeps its system message and last turn within the budget
    long = [messages[0], *[{"role": "user", "content": "word " * 20}] * 5, messages[1]]
    budget = len(model.tokenizer.encode(model.chat_template.render([ChatMessage(**messages[0]),
                                                                   ChatMessage(**messages[1])])))
    kept = model.chat_template.render_within([ChatMessage(**m) for m in long],
                                             lambda s: len(model.tokenizer.encode(s)), budget + 2)
    assert kept == rendered


def test_a_model_without_a_template_keeps_genlooops(tmp_path: Path):
    import_model(save_model(tmp_path / "plain", "gpt2", chat=False), "plain")
    template = service.load("plain").chat_template
    assert template.jinja is None
    assert template.render([ChatMessage(role="user", content="Hi")]) == "USER:\nHi\n\nASSISTANT:\n"


def _nothing_registered(home: Path) -> None:
    assert Store().list_models() == []
    assert not [p for p in (home / "models").glob("*")] if (home / "models").exists() else True


@pytest.mark.parametrize(("spoil", "message"), [
    (lambda d: (d / "config.json").unlink(), "no config.json"),
    (lambda d: (d / "model.safetensors").rename(d / "pytorch_model.bin"),
     "only pickle weights (pytorch_model.bin)"),
    (lambda d: _set(d, vocab_size=100), "the tokenizer has 357 tokens but the embedding only 100"),
    (lambda d: _set(d, model_type="no-such-arch"), "does not know the architecture 'no-such-arch'"),
    (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer.json"),
])
def test_bad_directories_are_one_line_and_register_nothing(tmp_path, workspace, spoil, message):
    directory = save_model(tmp_path / "bad", "gpt2")
    spoil(directory)
    with pytest.raises(InvalidInput) as e:
        import_model(directory, "bad")
    assert message in str(e.value) and "\n" not in str(e.value)
    _nothing_registered(workspace)


def _set(directory: Path, **values) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **values}))


def test_a_hub_id_offline_is_one_line_naming_the_repository(workspace, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidInput, match="cannot download 'some-org/some-model' at 'v1'") as e:
        import_model("some-org/some-model", "hub", revision="v1")
    assert "\n" not in str(e.value)
    _nothing_registered(workspace)
    with pytest.raises(InvalidInput, match="no such model directory"):
        import_model("./not/a/dir", "hub")


def test_a_bare_hub_id_offline_names_it_and_the_directory_it_is_not(workspace, monkeypatch):
    """``gpt2`` (a legacy id, no org) goes to the Hub too, as documented in ``import --help``."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InvalidInput) as e:
        import_model("gpt2", "gpt2", revision="607a30d783dfa663caf39e06633721c8d4cfcd7e")
    message = str(e.value)
    assert message.startswith("gpt2: no such model directory; as a Hub id: cannot download 'gpt2'")
    assert "\n" not in message
    _nothing_registered(workspace)


@pytest.mark.slow
def test_the_cli_imports_and_generates(tmp_path: Path):
    directory = save_model(tmp_path / "cli-model", "llama")
    home = tmp_path / "cli-home"
    r = run_cli(["import", str(directory), "--name", "cli-llama"], home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "cli-llama@1"
    gen = ["generate", "cli-llama", "--prompt", "ROMEO:", "--seed", "3", "--max-new-tokens", "8",
           "--no-stream", "--json"]
    first, second = run_cli(gen, home), run_cli(gen, home)
    assert first.returncode == 0, first.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["text"] == b["text"] and a["model"] == "cli-llama@1" and a["seed"] == 3
    bad = run_cli(["import", str(tmp_path / "nowhere"), "--name", "x"], home)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "no such model directory" in bad.stderr


def test_an_imported_model_tunes_on_the_loop(tmp_path: Path):
    """Its frozen recipe makes it a base like any trained version: sft gives name@2."""
    from genloop.training.tune import data_section, tune

    import_model(save_model(tmp_path / "base", "llama"), "base")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n"
                             for p, c in [("ROMEO:", " soft"), ("JULIET:", " O Romeo")] * 8))
    result = tune("base", data_section("sft", pairs), "sft", steps=3)
    assert result.model_ref == "base@2"
    assert Store().resolve("base@2").parent == "base@1"
    assert service.load("base@2").generate("ROMEO:", seed=1, max_new_tokens=4)[0].tokens >= 0
