"""ONNX / int8 variants of imported (``hf``) models, GPT-2 and Llama layouts: the graph gives
transformers' logits, greedy decoding of ``:onnx`` equals the PyTorch version's past the context,
batched requests equal each alone, the quality is measured on a given text (an imported version
has no dataset); ``genloop models quantize --text`` and ``genloop eval --text`` on imported
models, and ``genloop eval`` without a text is one line naming the way out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime")

from genloop.generation import service  # noqa: E402
from genloop.generation.batching import Batcher  # noqa: E402
from genloop.generation.text import TextRequest, generate_texts  # noqa: E402
from genloop.hub.imports import import_model  # noqa: E402
from genloop.hub.onnx import check_decoder, make_variant  # noqa: E402
from genloop.hub.ort import OrtNetwork  # noqa: E402
from genloop.store import Store  # noqa: E402

from ..conftest import run_cli  # noqa: E402, TID252
from ..generation.test_batching import submit  # noqa: E402, TID252
from .conftest import TEXT  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread", "workspace")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "held-out.txt"
    path.write_text(TEXT[:600], encoding="utf-8")
    return path


@pytest.mark.slow
def test_variants_of_an_imported_model(hf_dir: Path, corpus: Path):
    import_model(hf_dir, "tiny")
    store = Store()
    onnx = make_variant("tiny@1", "onnx", store, text=corpus)
    int8 = make_variant("tiny@1", "int8", store, text=corpus)
    assert onnx["family"] == "hf" and onnx["check_max_abs_logit_diff"] < 1e-4
    q = onnx["quality"]
    assert q["measured"] and q["text"] == str(corpus) and q["tokens"] > 50
    assert abs(q["bits_per_char_delta"]) < 1e-3  # the fp32 graph is transformers' network
    assert int8["quality"]["measured"] and int8["quality"]["bits_per_char"] != q["bits_per_char"]
    card = service.load("tiny@1").card
    assert "`tiny@1:int8`" in card and f"of {corpus.name}" in card

    fp32, graph, quant = (service.load(r, store) for r in ("tiny@1", "tiny@1:onnx", "tiny@1:int8"))
    assert isinstance(graph.network, OrtNetwork) and graph.network.dims == tuple(onnx["cache"])
    ids = torch.tensor([[5, 9, 33, 2, 70, 71], [8, 8, 100, 3, 4, 5]])
    with torch.no_grad():
        torch.testing.assert_close(graph.network(ids), fp32.network(ids), rtol=0, atol=1e-4)
    assert check_decoder(fp32.network, graph.network.session) < 1e-4

    # greedy past the context of 64 (the refill happens), the end token held off
    eos = fp32.tokenizer.eos_id
    greedy = TextRequest(prompt="ROMEO: But soft", max_new_tokens=90, temperature=0.0,
                         logit_bias={eos: -100.0})
    want = generate_texts(fp32.family, fp32.network, fp32.tokenizer, greedy)[0]
    got = generate_texts(graph.family, graph.network, graph.tokenizer, greedy)[0]
    assert got.text == want.text and got.tokens == 90
    seeded = dict(prompt=["ROMEO", "JULIET:"], max_new_tokens=20, temperature=1.0, seed=7)
    first = [o.text for o in quant.generate(**seeded)]
    assert [o.text for o in quant.generate(**seeded)] == first

    # continuous batching through the variant's slots: each request as it is alone
    batcher = Batcher(graph.family, graph.network, graph.tokenizer, max_batch=3, max_queue=8)
    requests = [dict(prompt=p, max_new_tokens=n, temperature=t, seed=s)
                for p, n, t, s in [("ROMEO: ", 30, 1.0, 1), ("the", 5, 0.0, 2), ("", 17, 1.0, 3),
                                   ("O Romeo, Romeo", 25, 0.7, 4)]]
    collectors = [submit(batcher, **r) for r in requests]
    for c in collectors:
        assert c.done.wait(60) and not c.errors
    for r, c in zip(requests, collectors, strict=True):
        alone = generate_texts(graph.family, graph.network, graph.tokenizer, TextRequest(**r))[0]
        assert c.outputs[0].text == alone.text, r


def test_padded_embedding_ids_are_never_drawn(tmp_path: Path, corpus: Path):
    """A tokenizer smaller than the embedding: the graph's extra ids stay −inf when decoding."""
    from .conftest import save_model, transformers

    directory = save_model(tmp_path / "padded", "gpt2")
    model = transformers.AutoModelForCausalLM.from_pretrained(directory)
    size = model.get_input_embeddings().weight.shape[0]
    model.resize_token_embeddings(size + 40)
    with torch.no_grad():
        torch.manual_seed(0)  # large pad rows: undecoded, they would win the draws
        model.get_output_embeddings().weight[size:].normal_(0.0, 4.0)
    model.save_pretrained(directory)
    import_model(directory, "padded")
    make_variant("padded@1", "onnx", Store(), text=corpus)
    graph = service.load("padded@1:onnx")
    assert graph.network.config.tokenizer_size == size
    ids = torch.tensor(graph.tokenizer.encode("ROMEO: But"))
    raw = graph.network(ids[None])[0, -1]
    assert raw.argmax() >= size  # undecoded, a pad id would be drawn
    slots = graph.family.slot_decoder(graph.network, 2)
    first = slots.prefill(1, ids)
    assert torch.isinf(first[size:]).all() and torch.isfinite(first[:size]).all()
    step = slots.step([1], first.argmax()[None])
    assert torch.isinf(step[0, size:]).all() and step[0].argmax() < size
    out = graph.generate(prompt="ROMEO", max_new_tokens=12, temperature=1.0, seed=1)[0]
    assert out.text


@pytest.mark.slow
def test_cli_quantizes_and_evaluates_an_imported_model(tmp_path: Path, workspace: Path,
                                                       corpus: Path):
    from genloop.hub.imports import import_model

    from .conftest import save_model

    # imported in process (the import command's own CLI test is in test_imports.py)
    import_model(save_model(tmp_path / "gpt2", "gpt2"), "tiny")
    made = run_cli(["models", "quantize", "tiny@1", "--text", str(corpus)], workspace, timeout=300)
    assert made.returncode == 0, made.stderr
    assert f"tiny@1:int8 ready: bits/char on {corpus.name}" in made.stdout

    scored = run_cli(["eval", "tiny@1", "--text", str(corpus), "--json"], workspace)
    assert scored.returncode == 0, scored.stderr
    metrics = json.loads(scored.stdout)
    assert metrics["model"] == "tiny@1" and metrics["bits_per_char"] > 0

    bare = run_cli(["eval", "tiny@1"], workspace)
    assert bare.returncode != 0
    assert len(bare.stderr.strip().splitlines()) == 1
    assert "no dataset of its own" in bare.stderr and "--text FILE" in bare.stderr
