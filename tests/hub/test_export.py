"""`genloop export --format hf`: a genloop gpt as a transformers GPT-2 directory.

Tiny models trained for seconds (char with a tied head, BPE with an untied one) are exported;
``AutoModelForCausalLM.from_pretrained`` gives genloop's logits on a batch within 1e-5,
``AutoTokenizer`` encodes (and decodes) as genloop's tokenizer does, the jinja chat template
renders genloop's transcript, greedy ``generate`` continues as genloop's greedy decoding. Bad
input is one line, and nothing is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ..conftest import run_cli, tiny_recipe_dict, write_corpus  # noqa: TID252

pytest.importorskip("transformers")

TEXTS = ["The cat walks to the house.", "My friend <eos> waits\n\nfor 你好 😀 zX", "", "  two  spaces"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A workspace with `char@1` (char tokenizer, tied head) and `bpe@1` (BPE, untied head)."""
    import genloop

    root = tmp_path_factory.mktemp("export")
    corpus = write_corpus(root / "corpus.txt")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_HOME", str(root / "home"))
        mp.delenv("GENLOOP_DB_URL", raising=False)
        mp.delenv("GENLOOP_CACHE", raising=False)
        char = tiny_recipe_dict(corpus, name="char", steps=20)
        bpe = tiny_recipe_dict(corpus, name="bpe", steps=20)
        bpe["data"].update(tokenizer="bpe", vocab_size=300)
        bpe["model"]["config"]["tie_weights"] = False
        refs = {"char": genloop.train(char).model_ref, "bpe": genloop.train(bpe).model_ref}
        yield {"root": root, "home": root / "home", "corpus": corpus, "refs": refs}


def export(ref: str, out: Path) -> Path:
    from genloop.cli.export import _export_hf

    return _export_hf(ref, out)


@pytest.fixture(scope="module", params=["char", "bpe"])
def exported(request: pytest.FixtureRequest, models: dict[str, Any]) -> dict[str, Any]:
    import genloop

    ref = models["refs"][request.param]
    out = export(ref, models["root"] / f"hf-{request.param}")
    return {"kind": request.param, "ref": ref, "out": out, "model": genloop.load(ref),
            "corpus": models["corpus"]}


def window_batch(model: Any, corpus: Path, rows: int = 4) -> torch.Tensor:
    """``rows`` windows of the model's whole context from the corpus."""
    block = model.config.block_size
    ids = model.tokenizer.encode(corpus.read_text(encoding="utf-8")[: 20 * block * rows])
    return torch.tensor([ids[i * block: (i + 1) * block] for i in range(rows)])


def test_from_pretrained_gives_genloops_logits_on_a_batch(exported: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM

    model = exported["model"]
    hf = AutoModelForCausalLM.from_pretrained(exported["out"]).eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    assert hf.config.tie_word_embeddings is (exported["kind"] == "char")
    ids = window_batch(model, exported["corpus"])
    with torch.no_grad():
        ours, theirs = model.network(ids), hf(input_ids=ids).logits
    assert ours.shape == theirs.shape == (4, model.config.block_size, model.tokenizer.vocab_size)
    assert (ours - theirs).abs().max().item() <= 1e-5
    # and the exported weights are genloop's, not a copy that happens to agree on one batch
    assert torch.equal(hf.transformer.wte.weight, model.network.wte.weight)
    assert torch.equal(hf.transformer.h[0].attn.c_attn.weight, model.network.blocks[0].attn.qkv.weight.t())


def test_auto_tokenizer_encodes_and_decodes_as_genloop(exported: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    ours = exported["model"].tokenizer
    theirs = AutoTokenizer.from_pretrained(exported["out"])
    specials = (theirs.unk_token_id, theirs.eos_token_id, theirs.bos_token_id, theirs.pad_token_id)
    assert specials == (0, 1, 1, 1)
    assert len(theirs) == ours.vocab_size
    text = exported["corpus"].read_text(encoding="utf-8")[:3000]
    for t in [*TEXTS, text]:
        ids = ours.encode(t)
        assert theirs(t)["input_ids"] == theirs.encode(t) == ids, t  # no bos/eos added either
        assert theirs.decode(ids, skip_special_tokens=True) == ours.decode(ids)
    assert theirs.decode([ours.eos_id], skip_special_tokens=True) == ""
    if exported["kind"] == "char":  # an unknown character is <unk>, as in genloop
        assert theirs.encode("zX") == ours.encode("zX") == [ours.unk_id, ours.unk_id]


def test_greedy_generate_continues_as_genloop(exported: dict[str, Any]) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = exported["model"]
    hf = AutoModelForCausalLM.from_pretrained(exported["out"]).eval()
    tok = AutoTokenizer.from_pretrained(exported["out"])
    prompt = "The cat"
    new = model.config.block_size - len(model.tokenizer.encode(prompt))  # within the context
    ours = model.generate(prompt, max_new_tokens=new, temperature=0.0, seed=0)[0]
    ids = tok(prompt, return_tensors="pt").input_ids
    out = hf.generate(ids, do_sample=False, max_new_tokens=new, eos_token_id=None)[0, ids.size(1):]
    text = tok.decode(out, skip_special_tokens=True)
    assert text.startswith(ours.text) and ours.text  # genloop stops at <eos>; transformers was told not to


def test_generation_config_and_card(exported: dict[str, Any]) -> None:
    from transformers import GenerationConfig

    out, model = exported["out"], exported["model"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["README.md", "chat_template.jinja", "config.json", "generation_config.json",
                     "model.safetensors", "special_tokens_map.json", "tokenizer.json",
                     "tokenizer_config.json"]
    gen = GenerationConfig.from_pretrained(out)
    assert (gen.eos_token_id, gen.bos_token_id, gen.pad_token_id) == (1, 1, 1)
    assert gen.max_length == model.config.block_size
    assert gen.do_sample is True and gen.temperature == 0.8
    card = (out / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: transformers\n")
    assert f"exported from genloop `{exported['ref']}`" in card
    assert model.directory.card().strip().splitlines()[0] in card  # genloop's own card follows
    assert json.loads((out / "tokenizer_config.json").read_text())["split_special_tokens"] is True


def test_chat_template_renders_genloops_transcript(exported: dict[str, Any]) -> None:
    from transformers import AutoTokenizer

    from genloop.generation.chat import ChatMessage, ChatTemplate

    tok = AutoTokenizer.from_pretrained(exported["out"])
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello", "name": "BOT"},
                {"role": "developer", "content": "{{ not jinja }}"}, {"role": "user", "content": "x"}]
    want = ChatTemplate().render([ChatMessage(**m) for m in messages])
    assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == want
    # a template of the model's own, with text that looks like jinja, quotes and any character
    odd = ChatTemplate(names={"system": "", "user": "Q 😀", "assistant": 'A "{%'},
                       turn="<{name}> {{braces}} {content}\\n\n", system="# {content} {name}\n",
                       reply="<{name}>")
    rendered = tok.apply_chat_template(messages, chat_template=odd.as_jinja(), tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == odd.render([ChatMessage(**m) for m in messages])


def test_bad_input_is_one_line_and_writes_nothing(models: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import genloop
    from genloop.errors import InvalidInput, NotFound
    from genloop.hub import export as hub_export
    from genloop.hub.export import export_hf

    monkeypatch.setenv("GENLOOP_HOME", str(models["home"]))
    with pytest.raises(NotFound, match="nosuch"):
        export_hf("nosuch@1", tmp_path / "a")
    with pytest.raises(NotFound, match="char@9"):
        export_hf("char@9", tmp_path / "a")
    lstm = genloop.train(tiny_recipe_dict(models["corpus"], name="rnn", family="lstm", steps=2))
    with pytest.raises(InvalidInput, match="'lstm' model; export --format hf takes gpt") as e:
        export_hf(lstm.model_ref, tmp_path / "a")
    assert "\n" not in str(e.value)
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="exists and is not empty"):
        export_hf(models["refs"]["char"], full)
    assert [p.name for p in full.iterdir()] == ["keep.txt"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidInput, match="is not a directory"):
        export_hf(models["refs"]["char"], tmp_path / "file")
    # a failure half-way leaves neither the directory nor a temporary one
    monkeypatch.setattr(hub_export, "model_card", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        export_hf(models["refs"]["char"], tmp_path / "half")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]
    # an empty directory is fine: it becomes the export
    (tmp_path / "empty").mkdir()
    monkeypatch.undo()
    monkeypatch.setenv("GENLOOP_HOME", str(models["home"]))
    assert (export_hf(models["refs"]["char"], tmp_path / "empty") / "config.json").is_file()


@pytest.mark.slow
def test_the_cli_exports_and_refuses_in_one_line(models: dict[str, Any], tmp_path: Path) -> None:
    home, ref = models["home"], models["refs"]["char"]
    ok = run_cli(["export", ref, "--format", "hf", str(tmp_path / "out")], home)
    assert ok.returncode == 0, ok.stderr
    assert f"exported {ref} (hf) to {tmp_path / 'out'}" in ok.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()
    again = run_cli(["export", ref, str(tmp_path / "out")], home)
    assert again.returncode == 2
    assert again.stderr.startswith("error:") and len(again.stderr.strip().splitlines()) == 1
    assert "exists and is not empty" in again.stderr
    missing = run_cli(["export", "nosuch", str(tmp_path / "other")], home)
    assert missing.returncode == 3 and "nosuch" in missing.stderr
    assert not (tmp_path / "other").exists()
