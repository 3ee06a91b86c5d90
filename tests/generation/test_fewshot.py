"""Few-shot prompts (generation/fewshot.py): k examples drawn seeded from a pairs dataset or a
JSONL file, put before the prompt, recorded with each choice and replayed from the record — on
the Python face, the CLI and /v1/completions, over a tiny real model."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient
from pydantic import ValidationError

import genloop
from genloop.errors import InvalidInput
from genloop.generation.fewshot import Example, FewShot, draw, sample_indices
from genloop.generation.service import replay

from ..conftest import run_cli, tiny_recipe_dict, write_corpus  # noqa: TID252

RECORDS = [{"prompt": f"Q{i}: ", "completion": f"answer {i}"} for i in range(10)]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A workspace with a tiny gpt (context 64), a JSONL of 10 records, the same records as a
    registered pairs dataset ``qa``, and a text dataset ``corpus``."""
    from genloop.data.pairs import PairsDataConfig
    from genloop.store import Store

    root = tmp_path_factory.mktemp("fewshot")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GENLOOP_HOME", str(root / "home"))
        mp.delenv("GENLOOP_DB_URL", raising=False)
        mp.delenv("GENLOOP_CACHE", raising=False)
        corpus = write_corpus(root / "corpus.txt")
        recipe = tiny_recipe_dict(corpus, name="fs", steps=10)
        recipe["model"]["config"]["block_size"] = 64
        ref = genloop.train(recipe).model_ref
        src = root / "qa.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in RECORDS), encoding="utf-8")
        ds = PairsDataConfig(source=str(src), name="qa").prepare()
        store = Store()
        store.add_dataset(ds.name, ds.hash, "pairs", str(ds.path), ds.meta)
        yield {"root": root, "home": root / "home", "ref": ref, "src": src, "qa_hash": ds.hash,
               "store": store}
        store.close()
    torch.set_num_threads(before)


def shots(ws, k=2, **kw):
    return {"source": str(ws["src"]), "k": k, "separator": "\n", **kw}


# --- drawing and formatting -------------------------------------------------------------------


def test_draws_are_seeded_distinct_and_nested():
    a = sample_indices(100, 8, seed=5)
    assert a == sample_indices(100, 8, seed=5) and len(set(a)) == 8
    assert all(0 <= i < 100 for i in a)
    assert sample_indices(100, 3, seed=5) == a[:3]  # 3 shots: the first 3 of 8
    assert sample_indices(100, 8, seed=6) != a
    assert sorted(sample_indices(5, 5, seed=1)) == [0, 1, 2, 3, 4]


def test_the_prefix_is_each_example_by_the_template_then_the_separator():
    spec = FewShot(source="x.jsonl", k=2, template="In: {prompt}\nOut: {completion}",
                   separator="\n---\n", examples=[Example(prompt="a", completion="1"),
                                                  Example(prompt="{b}", completion="2")])
    assert spec.prefix() == "In: a\nOut: 1\n---\nIn: {b}\nOut: 2\n---\n"
    with pytest.raises(InvalidInput, match="not drawn yet"):
        FewShot(source="x.jsonl").prefix()


@pytest.mark.parametrize("template, message", [
    ("{prompt}{answer}", "unknown field {answer}"),
    ("{prompt.__class__}{completion}", "unknown field"),
    ("{prompt}", "needs {completion}"),
    ("{prompt{completion}", "not a template"),
])
def test_a_bad_template_is_refused(template, message):
    with pytest.raises(ValidationError, match=message):
        FewShot(source="x.jsonl", template=template)


def test_examples_given_must_number_k():
    with pytest.raises(ValidationError, match="2 given for k = 3"):
        FewShot(source="x.jsonl", k=3, examples=[Example(prompt="a", completion="b")] * 2)


def test_a_file_and_the_dataset_made_from_it_give_their_records(ws):
    from_file = draw(FewShot(source=str(ws["src"]), k=10), seed=0, store=ws["store"])
    assert sorted(e.completion for e in from_file.examples) == sorted(r["completion"] for r in RECORDS)
    assert from_file.source_hash.startswith("sha256:") and from_file.seed == 0
    by_name = draw(FewShot(source="qa", k=2, seed=3), seed=0, store=ws["store"])
    by_hash = draw(FewShot(source=ws["qa_hash"][:12], k=2, seed=3), seed=0, store=ws["store"])
    assert by_name.examples == by_hash.examples and by_name.source_hash == ws["qa_hash"]
    assert by_name.seed == 3
    # the dataset's training split, decoded by its tokenizer, end-of-text dropped
    assert all({"prompt": e.prompt, "completion": e.completion} in RECORDS for e in by_name.examples)


# --- the Python face ----------------------------------------------------------------------------


def test_the_model_reads_the_examples_before_the_prompt(ws):
    m = genloop.load(ws["ref"])
    few = m.generate(["Q7: ", "x"], max_new_tokens=6, temperature=1.0, seed=11,
                     few_shot=shots(ws))
    spec = draw(FewShot(**shots(ws)), seed=11)  # the request's seed draws them
    assert len(spec.examples) == 2
    plain = m.generate([spec.prefix() + "Q7: ", spec.prefix() + "x"], max_new_tokens=6,
                       temperature=1.0, seed=11)
    assert [o.text for o in few] == [o.text for o in plain]
    assert [o.prompt for o in few] == ["Q7: ", "x"]  # the user's prompt, as given
    # k = 0: nothing before the prompt
    zero = m.generate("Q7: ", max_new_tokens=6, temperature=1.0, seed=11, few_shot=shots(ws, k=0))
    assert zero[0].text == m.generate("Q7: ", max_new_tokens=6, temperature=1.0, seed=11)[0].text


def test_the_examples_are_recorded_and_replay_without_the_source(ws, tmp_path):
    src = tmp_path / "gone.jsonl"
    src.write_text(ws["src"].read_text())
    m = genloop.load(ws["ref"])
    m.generate("Q1: ", max_new_tokens=8, temperature=1.0, seed=4,
               few_shot={"source": str(src), "k": 4})
    record = ws["store"].list_generations(limit=1)[0]
    recorded = record.request["few_shot"]
    assert len(recorded["examples"]) == 4 and recorded["seed"] == 4
    assert recorded["source_hash"].startswith("sha256:") and record.request["prompt"] == "Q1: "
    src.unlink()  # the examples come from the record now
    again = replay(record.id, ws["store"])
    assert again.matches and again.output == record.output


def test_a_request_without_few_shot_records_no_few_shot_key(ws):
    m = genloop.load(ws["ref"])
    m.generate("Q1: ", max_new_tokens=2, seed=1)
    assert "few_shot" not in ws["store"].list_generations(limit=1)[0].request


def test_a_stream_with_examples_is_the_same_text_and_is_recorded(ws):
    m = genloop.load(ws["ref"])
    streamed = "".join(m.stream("Q2: ", max_new_tokens=8, temperature=1.0, seed=9,
                                few_shot=shots(ws, k=2)))
    assert streamed == m.generate("Q2: ", max_new_tokens=8, temperature=1.0, seed=9,
                                  few_shot=shots(ws, k=2))[0].text
    assert len(ws["store"].list_generations(limit=1)[0].request["few_shot"]["examples"]) == 2


@pytest.mark.parametrize("few_shot, message", [
    ({"source": "qa", "k": 11}, "11 shots asked, but qa holds"),
    ({"source": "no-such-set", "k": 1}, "no dataset 'no-such-set'"),
    ({"source": "corpus", "k": 1}, "not 'pairs'"),
    ({"source": "/nowhere/x.jsonl", "k": 1}, "does not exist"),
    ({"source": "qa", "k": 65}, "less than or equal to 64"),
])
def test_bad_few_shot_input_is_one_line(ws, few_shot, message):
    m = genloop.load(ws["ref"])
    with pytest.raises(InvalidInput, match=message) as e:
        m.generate("Q1: ", max_new_tokens=2, seed=1, few_shot=few_shot)
    assert "\n" not in str(e.value)


def test_shots_that_overflow_the_context_say_how_many_fit(ws):
    m = genloop.load(ws["ref"])  # context 64: each example "Q3: answer 3\n" is 13 characters
    with pytest.raises(InvalidInput, match=r"the 5 examples and the prompt are 69 tokens; this "
                                           r"model's context is 64 tokens \(at most 4 shots fit\)"):
        m.generate("Q1: ", max_new_tokens=2, seed=1, few_shot=shots(ws, k=5))


# --- the HTTP face -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def http(ws):
    from genloop.serving.app import create_app
    from genloop.serving.settings import ServeConfig

    with TestClient(create_app(ServeConfig(auth=False), store=ws["store"])) as client:
        yield client


def test_completions_take_few_shot_as_an_extra_and_record_it(ws, http):
    body = {"model": ws["ref"], "prompt": "Q5: ", "max_tokens": 6, "temperature": 1.0, "seed": 21,
            "few_shot": {"source": "qa", "k": 2, "separator": "\n"}}
    r = http.post("/v1/completions", json=body)
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    got = http.get(f"/v1/generations/{choice['generation_id']}").json()
    assert got["request"]["few_shot"]["source_hash"] == ws["qa_hash"]
    assert len(got["request"]["few_shot"]["examples"]) == 2
    # the batcher's text is the Python face's for the same seed and examples
    m = genloop.load(ws["ref"])
    same = m.generate("Q5: ", max_new_tokens=6, temperature=1.0, seed=21,
                      few_shot={"source": "qa", "k": 2, "separator": "\n"})
    assert choice["text"] == same[0].text
    assert replay(choice["generation_id"], ws["store"]).matches


@pytest.mark.parametrize("few_shot, message", [
    ({"source": "qa", "k": 11}, "11 shots asked"),
    ({"source": "nope", "k": 1}, "no dataset 'nope'"),
    ({"source": "/etc/x.jsonl", "k": 1}, "is a file; this face takes a registered pairs dataset"),
    ({"source": "qa", "k": 1, "examples": [{"prompt": "a", "completion": "b"}]},
     "few_shot.examples: drawn and recorded by the server"),
    ({"source": "qa", "k": 6}, "this model's context is 64 tokens"),
    ({"source": "qa", "template": "{oops}"}, "unknown field"),
])
def test_bad_few_shot_on_http_is_a_400(ws, http, few_shot, message):
    r = http.post("/v1/completions", json={"model": ws["ref"], "prompt": "Q1: ", "max_tokens": 2,
                                          "few_shot": few_shot})
    assert r.status_code == 400, r.text
    assert message in r.json()["error"]["message"], r.text


def test_few_shot_on_http_takes_an_admin_key(ws):
    """The datasets are the workspace's, not a key owner's: a generate key would read their
    records through its own generations' records."""
    from genloop.serving.app import create_app
    from genloop.serving.settings import ServeConfig

    _, generate = ws["store"].create_key("tenant")
    _, admin = ws["store"].create_key("boss", scope="admin")
    body = {"model": ws["ref"], "prompt": "Q1: ", "max_tokens": 2,
            "few_shot": {"source": "qa", "k": 1}}
    with TestClient(create_app(ServeConfig(), store=ws["store"])) as client:
        r = client.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {generate}"})
        assert r.status_code == 403 and "takes an admin key" in r.json()["error"]["message"], r.text
        plain = client.post("/v1/completions", json={**body, "few_shot": None},
                            headers={"Authorization": f"Bearer {generate}"})
        assert plain.status_code == 200, plain.text
        r = client.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text


# --- the CLI -------------------------------------------------------------------------------------


def test_cli_few_shot_and_shots(ws):
    args = ["generate", ws["ref"], "--prompt", "Q3: ", "--seed", "7", "--temperature", "1",
            "--max-new-tokens", "6", "--json", "--few-shot", str(ws["src"]), "--shots", "2",
            "--shot-separator", "\n"]
    r = run_cli(args, ws["home"])
    assert r.returncode == 0, r.stderr
    text = json.loads(r.stdout.splitlines()[0])["text"]
    m = genloop.load(ws["ref"])
    assert text == m.generate("Q3: ", max_new_tokens=6, temperature=1.0, seed=7,
                              few_shot=shots(ws, k=2))[0].text
    bad = run_cli(["generate", ws["ref"], "--prompt", "x", "--shots", "2"], ws["home"])
    assert bad.returncode != 0 and "--shots: give --few-shot" in bad.stderr
