"""One seeded decoding path under all three faces.

The same request and seed give the same text through ``genloop generate`` (the CLI),
``genloop.load(...).generate`` (Python) and ``POST /v1/completions`` (HTTP, continuous batching),
for one choice and for several; and every choice, whichever face made it, replays from its record
alone (``genloop generate --replay <id>``) to its recorded content hash. Images follow the same
rule: image i is the request of one seeded seed + i.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from ..conftest import BIN  # noqa: TID252

PROMPT = "The "
SETTINGS = {"max_new_tokens": 40, "temperature": 0.9, "top_k": 12}


@pytest.fixture(scope="module")
def api(server, served_workspace):
    with server.client(served_workspace.key) as c:
        yield c


def http_texts(api, n: int, seed: int) -> tuple[list[str], list[str]]:
    r = api.post("/v1/completions", json={
        "model": "tiny-text", "prompt": PROMPT, "max_tokens": SETTINGS["max_new_tokens"],
        "temperature": SETTINGS["temperature"], "top_k": SETTINGS["top_k"], "seed": seed, "n": n})
    assert r.status_code == 200, r.text
    choices = sorted(r.json()["choices"], key=lambda c: c["index"])
    return [c["text"] for c in choices], [c["generation_id"] for c in choices]


def python_texts(home, monkeypatch, n: int, seed: int) -> tuple[list[str], list[str]]:
    import genloop

    monkeypatch.setenv("GENLOOP_HOME", str(home))
    outs = genloop.load("tiny-text").generate(PROMPT, seed=seed, num_samples=n, **SETTINGS)
    from genloop.store import Store

    rows = Store().list_generations(limit=n)  # newest first: this call's records
    by_hash = {r.content_hash: r.id for r in rows}
    return [o.text for o in outs], [by_hash[o.content_hash] for o in outs]


def cli(home, *args: str) -> subprocess.CompletedProcess:
    from ..conftest import workspace_env  # noqa: TID252

    return subprocess.run([str(BIN / "genloop"), *args], env=workspace_env(home),
                          capture_output=True, text=True, timeout=120)


def cli_texts(home, n: int, seed: int) -> list[str]:
    r = cli(home, "generate", "tiny-text", "--prompt", PROMPT, "--seed", str(seed), "-n", str(n),
            "--max-new-tokens", str(SETTINGS["max_new_tokens"]),
            "--temperature", str(SETTINGS["temperature"]), "--top-k", str(SETTINGS["top_k"]), "--json")
    assert r.returncode == 0, r.stderr
    return [json.loads(line)["text"] for line in r.stdout.splitlines() if line.startswith("{")]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("n", [1, 3])
def test_same_request_and_seed_same_text_on_every_face(api, served_workspace, monkeypatch, n):
    home = served_workspace.home
    http, _ = http_texts(api, n, seed=5)
    python, _ = python_texts(home, monkeypatch, n, seed=5)
    assert len(http) == n and len(set(http)) == n  # the choices differ from each other
    assert python == http
    assert cli_texts(home, n, seed=5) == http
    # choice i is the request of one seeded seed + i
    assert [http_texts(api, 1, seed=5 + i)[0][0] for i in range(n)] == http


@pytest.mark.usefixtures("one_thread")
def test_every_recorded_choice_replays_to_its_content_hash(api, served_workspace, monkeypatch):
    from genloop.generation.service import replay
    from genloop.store import Store

    home = served_workspace.home
    _, http_ids = http_texts(api, 3, seed=11)
    _, python_ids = python_texts(home, monkeypatch, 3, seed=12)
    store = Store()
    for gid in [*http_ids, *python_ids]:
        record = store.get_generation(gid)
        assert record.request["num_samples"] == 1 and record.request["seed"] == record.seed
        again = replay(gid, store)
        assert again.matches, (gid, record.output, again.output)
        assert again.output == record.output
    assert len({store.get_generation(g).seed for g in http_ids}) == 3


@pytest.mark.slow
def test_genloop_generate_replay_checks_the_record(api, served_workspace):
    home = served_workspace.home
    _, ids = http_texts(api, 2, seed=21)
    r = cli(home, "generate", "--replay", ids[1], "--json")
    assert r.returncode == 0, r.stderr
    line = json.loads(r.stdout.splitlines()[-1])
    assert line["matches"] is True and line["seed"] == 22 and line["id"] == ids[1]
    assert "same content hash" in r.stderr
    bad = cli(home, "generate", "--replay", "0" * 32)
    assert bad.returncode != 0 and "no generation" in bad.stderr
    both = cli(home, "generate", "tiny-text", "--replay", ids[0])
    assert both.returncode != 0 and "--replay takes the generation id alone" in both.stderr


@pytest.mark.usefixtures("one_thread")
def test_every_image_of_a_request_replays_to_its_content_hash(served_workspace, monkeypatch, tmp_path):
    import genloop
    from genloop.generation.service import replay

    monkeypatch.setenv("GENLOOP_HOME", str(served_workspace.home))
    model = genloop.load("tiny-digits")
    result = model.generate(num_samples=3, seed=9)
    for i, record in enumerate(result.records):
        # image i is the request of one seeded 9 + i (its class recorded), as text's choice i
        assert record.seed == 9 + i and record.request["num_samples"] == 1
        assert record.request["seed"] == record.seed and record.request["class_label"] == record.output
        alone = model.generate(num_samples=1, seed=9 + i, class_label=record.output).records[0]
        assert alone.content_hash == record.content_hash
        again = replay(record.id)
        assert again.matches and again.pixels.shape[-1] in (1, 3)
    r = cli(served_workspace.home, "generate", "--replay", result.records[2].id,
            "--out", str(tmp_path / "again.png"))
    assert r.returncode == 0, r.stderr
    from genloop.generation.image import read_provenance

    assert read_provenance(tmp_path / "again.png")["content_hash"] == result.records[2].content_hash
