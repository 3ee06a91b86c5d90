"""Provenance signed as a generation is made: the seal is written with the row (SQLite and
PostgreSQL), handed out unchanged, and a row edited afterwards no longer verifies; a row from
before generation-time signing is signed on request and says so; a removed seal is noticed.

A tiny untrained GPT over a character tokenizer (milliseconds): what is signed does not depend
on what it learnt.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from genloop.errors import CorruptArtifact
from genloop.generation import service
from genloop.generation.provenance import AT_GENERATION, ON_REQUEST, claims, verify_file, verify_generation
from genloop.generation.service import ImageModel, TextModel, image_png, load
from genloop.generation.text import content_hash
from genloop.models.modeldir import ModelDir
from genloop.models.registry import get_family
from genloop.safety.provenance import SignedRecord, create_keys, fingerprint, workspace_keys
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import GenerationRecord, Store
from genloop.store.db import GenerationRow
from genloop.tokenizers import CharTokenizer

from .test_provenance import register_untrained  # noqa: TID252

pytestmark = pytest.mark.usefixtures("one_thread")


def register_text(store: Store, name: str = "u-gpt") -> str:
    from genloop.config import settings

    tok = CharTokenizer.train(["the quick brown fox jumps over the lazy dog."])
    family = get_family("gpt")
    config = family.make_config("tiny", vocab_size=tok.vocab_size, block_size=32)
    torch.manual_seed(0)
    staged = ModelDir(settings().models_dir / f".staging-{name}")
    staged.path.mkdir(parents=True)
    staged.write_network(family, config, family.build(config))
    staged.write_tokenizer(tok)
    return store.register_model(name, staged.path, family="gpt", dataset_hash="e" * 64).ref


@pytest.fixture
def gpt(store: Store) -> Iterator[TextModel]:
    service._CACHE.clear()
    model = load(register_text(store), store)
    assert isinstance(model, TextModel)
    yield model
    service._CACHE.clear()


def made(model: TextModel, store: Store, n: int = 2, seed: int = 1) -> list[GenerationRecord]:
    model.generate("the ", max_new_tokens=6, seed=seed, num_samples=n)
    return store.list_generations(model.ref, limit=n)


def edit(store: Store, gid: str, **columns) -> None:  # noqa: ANN003
    """Change a generation's row directly (no store API): what someone with the database does."""
    with store.write() as s:
        row = s.get(GenerationRow, gid)
        for name, value in columns.items():
            if name == "shared":
                assert row.shared is not None
                row.shared.body = {**row.shared.body, **value}
            else:
                setattr(row, name, value)


def check(verdict, name: str):  # noqa: ANN001, ANN201
    return next(c for c in verdict.checks if c.name == name)


def test_a_text_generation_is_signed_as_it_is_made(gpt, store, tmp_path) -> None:
    records = made(gpt, store)
    assert len(records) == 2
    for r in records:
        assert r.signature is not None
        assert r.signature["signer"] == fingerprint(workspace_keys().signer_cert.read_text())
        payload = r.signature["payload"]
        assert payload == {**claims(r, store), "signed": AT_GENERATION}
        assert payload["dataset_hash"] == "e" * 64 and payload["content_hash"] == content_hash(r.output)
        verdict, signed = verify_generation(r.id, store=store)
        assert verdict.ok, verdict.checks
        assert signed.payload == payload and signed.signature == r.signature["signature"]
        assert check(verdict, "signed at").detail.startswith("generation")
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        first = api.get(f"/v1/generations/{records[0].id}/provenance")
        again = api.get(f"/v1/generations/{records[0].id}/provenance")
    assert first.status_code == 200, first.text
    assert first.json() == again.json()  # the seal made with it, not a new (randomised) one
    served = SignedRecord.model_validate(first.json())
    assert served.signature == records[0].signature["signature"]
    assert served.ca_fingerprint == workspace_keys().fingerprint()
    path = tmp_path / "record.json"
    path.write_text(first.text)
    assert verify_file(path, store=store).ok


@pytest.mark.parametrize("change", ["output", "seed", "model", "request", "shared request"])
def test_a_row_edited_after_its_making_is_rejected(gpt, store, tmp_path, change) -> None:
    r = made(gpt, store, n=1)[0]
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        before = api.get(f"/v1/generations/{r.id}/provenance").text
        edit(store, r.id, **{"output": {"output": r.output + "!"}, "seed": {"seed": r.seed + 1},
                             "model": {"model": "someone-else@1"},
                             "request": {"request": {**r.request, "prompt": "a lie "}},
                             "shared request": {"shared": {"temperature": 0.01}}}[change])
        after = api.get(f"/v1/generations/{r.id}/provenance").text
    assert after == before  # still what was signed when it was made
    verdict, _ = verify_generation(r.id, store=store)
    assert not verdict.ok and {c.name for c in verdict.checks if not c.ok} == {"store"}
    detail = check(verdict, "store").detail
    assert detail.startswith("the record no longer matches what was signed at generation")
    field = {"output": "output", "seed": "seed", "model": "model", "request": "request_hash",
             "shared request": "request_hash"}[change]
    assert field in detail
    path = tmp_path / "record.json"
    path.write_text(before)
    assert not verify_file(path, store=store).ok  # the file handed out before: the same verdict


def test_a_forged_seal_and_a_removed_one_are_noticed(gpt, store) -> None:
    newer, older = made(gpt, store)
    forged = {**older.signature, "payload": {**older.signature["payload"], "seed": older.seed + 1}}
    edit(store, older.id, seed=older.seed + 1, signature=forged)  # the row and its seal together
    verdict, _ = verify_generation(older.id, store=store)
    assert "signature" in {c.name for c in verdict.checks if not c.ok}
    # a generation made after a sealed one, passed off as one from before generation-time signing
    edit(store, newer.id, signature=None)
    verdict, signed = verify_generation(newer.id, store=store)
    assert signed.payload["signed"] == ON_REQUEST
    assert not verdict.ok and not check(verdict, "signed at").ok
    assert "it was removed" in check(verdict, "signed at").detail


def test_a_generation_from_before_is_signed_on_request(gpt, store) -> None:
    text_ = "made before generation-time signing"
    old = store.record_generation(model=gpt.version, kind="text", request={"prompt": "p", "seed": 3},
                                  seed=3, output=text_, file=None, content_hash=content_hash(text_),
                                  timings={})  # no ``sign``: as an older genloop wrote it
    assert old.signature is None
    made(gpt, store)  # later generations are sealed: the old one still verifies
    verdict, signed = verify_generation(old.id, store=store)
    assert verdict.ok, verdict.checks
    assert signed.payload["signed"] == ON_REQUEST
    assert "on request" in check(verdict, "signed at").detail
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        body = api.get(f"/v1/generations/{old.id}/provenance").json()
    assert body["payload"]["signed"] == ON_REQUEST


def test_an_image_is_signed_as_it_is_made_and_an_edited_one_not_signed_again(store, tmp_path) -> None:
    service._CACHE.clear()
    model = load(register_untrained("u-gan", "gan"), store)
    assert isinstance(model, ImageModel)
    a, b = model.generate(num_samples=2, seed=7).records
    assert a.signature is not None and a.signature["payload"]["content_hash"] == a.content_hash
    path = tmp_path / "a.png"
    path.write_bytes(image_png(a, store))
    assert verify_file(path, store=store).ok
    edit(store, a.id, seed=a.seed + 1)
    verdict = verify_file(path, store=store)
    assert check(verdict, "store").ok is False
    assert "no longer matches what was signed at generation" in check(verdict, "store").detail
    edit(store, b.id, model="someone-else@1")  # not fetched yet: its PNG is never signed so
    with pytest.raises(CorruptArtifact, match="no longer matches what was signed at generation"):
        image_png(store.get_generation(b.id), store)
    service._CACHE.clear()


def test_replaced_keys_still_unseal_what_they_signed(gpt, store) -> None:
    r = made(gpt, store, n=1)[0]
    old_fp = workspace_keys().fingerprint()
    create_keys(replace=True)
    verdict, signed = verify_generation(r.id, store=store)
    assert signed.ca_fingerprint == old_fp  # the retired chain, from keys/provenance/retired/
    # signed by a CA the workspace no longer has: its trust is the old CA's, given with --trust
    assert {c.name for c in verdict.checks if not c.ok} == {"trust"}
    old_ca = next((workspace_keys().directory / "retired").glob("*/ca.pem"))
    assert verify_generation(r.id, store=store, trust=old_ca)[0].ok


def test_an_older_database_gets_the_signature_column(db_url: str, workspace: Path) -> None:
    old = Store(db_url)
    old.close()
    engine = create_engine(db_url)
    with engine.begin() as c:
        c.execute(text("ALTER TABLE generations DROP COLUMN signature"))
    engine.dispose()
    store = Store(db_url)
    try:
        service._CACHE.clear()
        model = load(register_text(store), store)
        assert isinstance(model, TextModel)
        (r,) = made(model, store, n=1)
        assert store.get_generation(r.id).signature == r.signature is not None
        assert verify_generation(r.id, store=store)[0].ok
    finally:
        service._CACHE.clear()
        store.close()


def test_cli_verify_generation_rejects_an_edited_row(workspace: Path) -> None:
    from ..conftest import run_cli  # noqa: TID252

    store = Store()
    service._CACHE.clear()
    model = load(register_text(store), store)
    assert isinstance(model, TextModel)
    (r,) = made(model, store, n=1)
    service._CACHE.clear()
    ok = run_cli(["verify", "--generation", r.id], workspace)
    assert ok.returncode == 0, ok.stderr
    assert "signed at" in ok.stdout and "verified" in ok.stderr
    edit(store, r.id, output=r.output + " (edited)")
    bad = run_cli(["verify", "--generation", r.id, "--json"], workspace)
    assert bad.returncode == 1, bad.stderr
    body = json.loads(bad.stdout)
    assert not body["ok"] and body["record"]["payload"]["signed"] == AT_GENERATION
    (store_check,) = [c for c in body["checks"] if c["name"] == "store"]
    assert "no longer matches what was signed at generation" in store_check["detail"]
    assert "output" in store_check["detail"]
