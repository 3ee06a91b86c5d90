"""ONNX export and the int8 variant: the graph equals PyTorch, its slot decoder equals gpt's
``sample`` (context overflow included), a version's variants are built into its directory with
their quality on the card, resolved as ``name@N:int8`` and served on the CLI, Python and HTTP
faces; an unknown variant is a one-line NotFound listing the variants."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")

from genloop.errors import InvalidInput, NotFound  # noqa: E402
from genloop.generation.batching import Batcher  # noqa: E402
from genloop.generation.text import TextRequest, generate_texts  # noqa: E402
from genloop.hub.onnx import check_decoder, export_decoder, export_onnx, make_variant, session  # noqa: E402
from genloop.hub.ort import OrtNetwork, family_of  # noqa: E402
from genloop.models.registry import get_family  # noqa: E402
from genloop.store import Store, parse_model_ref, split_variant  # noqa: E402
from genloop.tokenizers import CharTokenizer  # noqa: E402

from ..generation.test_batching import submit  # noqa: E402, TID252

pytestmark = pytest.mark.usefixtures("one_thread")

CORPUS = ["the quick brown fox jumps over the lazy dog.", "To be, or not to be: that is it!"]


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory):
    """A tiny random gpt (context 16, a sharp untied head) and its exported fp32 decoder."""
    torch.set_num_threads(1)
    tok = CharTokenizer.train(CORPUS)
    family = get_family("gpt")
    torch.manual_seed(0)
    model = family.build(family.make_config("tiny", vocab_size=tok.vocab_size, block_size=16,
                                            tie_weights=False)).eval()
    with torch.no_grad():
        model.head.weight.normal_(0.0, 0.3)
        model.head.weight[tok.eos_id] = 0.0
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    diff = export_decoder(model, path)
    network = OrtNetwork(session(path, threads=1), model.config, "onnx")
    return tok, family, model, family_of(family), network, diff


def test_the_graph_gives_pytorchs_logits(graph):
    tok, family, model, _ort_family, network, diff = graph
    assert diff < 1e-4
    assert check_decoder(model, network.session) < 1e-4
    x = torch.randint(0, tok.vocab_size, (3, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(network(x), model(x), atol=1e-4)


def test_decoding_on_the_graph_equals_gpt_past_the_context(graph):
    """40 tokens through a context of 16: the overflow refill happens twice; greedy and seeded
    sampling give gpt's tokens, one prompt and a batch of equal-length prompts alike."""
    tok, family, model, ort_family, network, _ = graph
    for req in [TextRequest(prompt="the ", max_new_tokens=40, temperature=0.0),
                TextRequest(prompt=["to be", "the q"], max_new_tokens=40, temperature=1.0, seed=3,
                            num_samples=2)]:
        want = [o.text for o in generate_texts(family, model, tok, req)]
        got = [o.text for o in generate_texts(ort_family, network, tok, req)]
        assert got == want
        assert len(want[0]) > 16


def test_batched_requests_on_the_graph_equal_each_alone(graph):
    tok, _family, _model, ort_family, network, _ = graph
    batcher = Batcher(ort_family, network, tok, max_batch=3, max_queue=8)
    requests = [dict(prompt=p, max_new_tokens=n, temperature=t, seed=s)
                for p, n, t, s in [("the ", 30, 1.0, 1), ("to be", 5, 0.0, 2), ("", 17, 1.0, 3),
                                   ("the lazy dog", 25, 0.7, 4)]]
    collectors = [submit(batcher, **r) for r in requests]  # 4 requests, 3 slots: one waits
    for c in collectors:
        assert c.done.wait(60) and not c.errors
    for r, c in zip(requests, collectors, strict=True):
        alone = generate_texts(ort_family, network, tok, TextRequest(**r))[0]
        assert c.outputs[0].text == alone.text, r
    assert batcher.steps < sum(r["max_new_tokens"] for r in requests)


def test_refs_carry_a_variant():
    assert parse_model_ref("poet@3:int8") == ("poet", 3)
    assert split_variant("poet@3:int8") == ("poet@3", "int8")
    assert split_variant("poet:onnx") == ("poet", "onnx")
    assert split_variant("poet@3") == ("poet@3", None)
    for bad in ["poet@3:", "poet@3:INT8", "poet@3:a:b", "poet:@3"]:
        with pytest.raises(InvalidInput, match="invalid"):
            parse_model_ref(bad)


@pytest.fixture
def trained(workspace: Path, tiny_recipe) -> Store:
    from genloop.training.loop import train

    train(tiny_recipe(name="tiny", steps=30))
    return Store()


@pytest.mark.slow
def test_int8_variant_is_built_resolved_and_served(trained: Store, tmp_path: Path):
    from genloop.generation import service

    store = trained
    with pytest.raises(NotFound) as e:
        store.resolve("tiny@1:int8")
    assert "tiny@1 has none" in str(e.value) and "\n" not in str(e.value)

    meta = make_variant("tiny@1", "int8", store)
    make_variant("tiny", "onnx", store)
    quality = meta["quality"]
    assert quality["measured"] and quality["tokens"] > 100
    assert abs(quality["bits_per_char_delta"]) < 0.05  # int8 costs little, even on a tiny model
    onnx_meta = json.loads((Path(store.resolve("tiny@1").path) / "variants" / "onnx"
                            / "variant.json").read_text())
    assert abs(onnx_meta["quality"]["bits_per_char_delta"]) < 1e-3  # fp32 graph = PyTorch
    card = service.load("tiny@1").card
    assert "## Servable variants" in card and "`tiny@1:int8`" in card and "`tiny@1:onnx`" in card
    assert card.count("## Servable variants") == 1

    with pytest.raises(NotFound) as e:
        store.resolve("tiny@1:fp16")
    assert str(e.value) == ("model tiny@1:fp16 not found; tiny@1 has variants: tiny@1:int8, "
                            "tiny@1:onnx")
    assert store.resolve("tiny@1:int8").ref == "tiny@1:int8"

    fp32, onnx, int8 = (service.load(r, store) for r in ("tiny@1", "tiny@1:onnx", "tiny@1:int8"))
    assert isinstance(int8.network, OrtNetwork) and int8.ref == "tiny@1:int8"
    greedy = dict(prompt="the ", max_new_tokens=24, temperature=0.0)
    assert onnx.generate(**greedy)[0].text == fp32.generate(**greedy)[0].text
    seeded = dict(prompt=["a", "the"], max_new_tokens=20, temperature=1.0, seed=7)
    first = [o.text for o in int8.generate(**seeded)]
    assert [o.text for o in int8.generate(**seeded)] == first
    assert "".join(int8.stream(prompt="a", max_new_tokens=20, temperature=1.0, seed=7)) == first[0]

    # the record names the variant and replays through it
    record = store.list_generations(model="tiny@1:int8")[0]
    assert record.model == "tiny@1:int8"
    assert service.replay(record.id, store).matches

    # HTTP: continuous batching through the variant's slot decoder
    from fastapi.testclient import TestClient

    from genloop.serving.app import create_app
    from genloop.serving.settings import ServeConfig

    with TestClient(create_app(ServeConfig(auth=False))) as client:
        r = client.post("/v1/completions", json={"model": "tiny@1:int8", "prompt": "a",
                                                  "max_tokens": 20, "temperature": 1.0, "seed": 7})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "tiny@1:int8"
        assert r.json()["choices"][0]["text"] == first[0]
        r = client.post("/v1/completions", json={"model": "tiny@1:bf16", "prompt": "a"})
        assert r.status_code == 404 and "tiny@1 has variants" in r.text

    out = export_onnx("tiny@1", tmp_path / "out", store, int8=True)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.onnx", "tokenizer.json",
                                                     "variant.json"]
    with pytest.raises(InvalidInput, match="not an empty directory"):
        export_onnx("tiny@1", out, store)


def test_only_gpt_exports(workspace: Path, tiny_recipe):
    from genloop.training.loop import train

    train(tiny_recipe(name="rnn", steps=5, family="lstm"))
    with pytest.raises(InvalidInput, match="rnn@1 is a lstm model: ONNX export"):
        make_variant("rnn@1", "int8", Store())
    with pytest.raises(InvalidInput, match="unknown variant 'fp16'"):
        make_variant("rnn@1", "fp16", Store())
    assert not (Path(Store().resolve("rnn@1").path) / "variants").exists()


def test_quantized_graph_runs_close_to_fp32(graph, tmp_path: Path):
    from genloop.hub.onnx import prefill_logits, quantize

    tok, _family, model, _ort_family, network, _ = graph
    src = tmp_path / "fp32.onnx"
    export_decoder(model, src)
    quantize(src, tmp_path / "int8.onnx")
    int8 = session(tmp_path / "int8.onnx", threads=1)
    x = np.random.default_rng(0).integers(0, tok.vocab_size, (2, 16))
    a, b = prefill_logits(network.session, model.config, x), prefill_logits(int8, model.config, x)
    assert np.abs(a - b).max() < 0.5 and not np.array_equal(a, b)  # quantized, and close
    assert (tmp_path / "int8.onnx").stat().st_size < src.stat().st_size


@pytest.mark.slow
def test_the_cli_quantizes_and_generates_from_the_variant(trained: Store, workspace: Path, cli):
    made = cli(["models", "quantize", "tiny@1"], workspace, timeout=300)
    assert made.returncode == 0, made.stderr
    assert "tiny@1:int8 ready: validation bits/char" in made.stdout
    gen = ["generate", "tiny@1:int8", "--prompt", "the", "--seed", "1", "--max-new-tokens", "12",
           "--no-stream", "--json"]
    first, second = cli(gen, workspace), cli(gen, workspace)
    assert first.returncode == 0, first.stderr
    a = json.loads(first.stdout)
    assert a["model"] == "tiny@1:int8" and a["text"] == json.loads(second.stdout)["text"]
    bad = cli(["generate", "tiny@1:fp16", "--prompt", "the"], workspace)
    assert bad.returncode == 3 and "tiny@1 has variants: tiny@1:int8" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
