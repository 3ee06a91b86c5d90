"""Signed provenance: the workspace CA, C2PA manifests on every image PNG, signed text records, and
``genloop verify`` accepting a genloop image and rejecting altered pixels, an altered manifest,
and an image signed by another CA's key.

Images come from untrained tiny models registered in a fresh workspace (milliseconds): what is
signed and checked does not depend on what the network learnt.
"""

from __future__ import annotations

import io
import json
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography import x509
from fastapi.testclient import TestClient
from PIL import Image

from genloop.generation import service
from genloop.generation.image import png_bytes, read_pixels, read_provenance
from genloop.generation.provenance import claims, sign_image, verify_file, verify_generation
from genloop.generation.service import ImageModel, image_png, load
from genloop.generation.text import content_hash as text_hash
from genloop.models.modeldir import ModelDir
from genloop.models.registry import FAMILIES
from genloop.safety.provenance import (
    DOCUMENT_SIGNING,
    SignedRecord,
    create_keys,
    workspace_keys,
)
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store

from ..conftest import run_cli  # noqa: TID252


def register_untrained(name: str, family: str) -> str:
    """An untrained tiny ``family`` model (8×8 grey, 3 classes), registered with a dataset hash
    (as a trained one has) — after tests/serving/test_hardening_images.py."""
    from genloop.config import settings

    fam = FAMILIES[family]
    config = fam.make_config("tiny", image_size=8, channels=1, num_classes=3, conditional=True)
    torch.manual_seed(0)
    staged = ModelDir(settings().models_dir / f".staging-{name}")
    staged.path.mkdir(parents=True)
    staged.write_network(fam, config, fam.build(config))
    staged.write_labels(["zero", "one", "two"])
    return Store().register_model(name, staged.path, family=family, dataset_hash="d" * 64).ref


@pytest.fixture
def gan(workspace, one_thread) -> ImageModel:  # noqa: ARG001
    service._CACHE.clear()
    model = load(register_untrained("u-gan", "gan"))
    assert isinstance(model, ImageModel)
    yield model
    service._CACHE.clear()


def chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """A PNG's chunks as (type, data)."""
    out, i = [], 8
    while i < len(png):
        (n,) = struct.unpack(">I", png[i : i + 4])
        out.append((png[i + 4 : i + 8], png[i + 8 : i + 8 + n]))
        i += 12 + n
    return out


def assemble(parts: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
                    for t, d in parts)
    return b"\x89PNG\r\n\x1a\n" + body


def failed(verdict) -> set[str]:  # noqa: ANN001
    return {c.name for c in verdict.checks if not c.ok}


def signed_image(gan: ImageModel, tmp_path: Path, seed: int = 5) -> tuple[Path, object]:
    record = gan.generate(num_samples=1, seed=seed).records[0]
    path = tmp_path / f"{record.id}.png"
    path.write_bytes(image_png(record))
    return path, record


# --- the CA ---------------------------------------------------------------------------------------


def test_keys_are_a_ca_and_a_signer_it_issued(workspace) -> None:
    keys = create_keys()
    assert keys.directory == workspace / "keys" / "provenance"
    for key in (keys.ca_key, keys.signer_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    ca = x509.load_pem_x509_certificate(keys.ca_cert.read_bytes())
    signer = x509.load_pem_x509_certificate(keys.signer_cert.read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert signer.issuer == ca.subject != signer.subject  # not self-signed: the SDK refuses that
    signer.verify_directly_issued_by(ca)
    ekus = {e.dotted_string for e in signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value}
    assert DOCUMENT_SIGNING in ekus
    assert signer.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    before = keys.fingerprint()
    assert create_keys().fingerprint() == before  # kept
    assert create_keys(replace=True).fingerprint() != before


# --- images -------------------------------------------------------------------------------------


def test_accepts_a_genloop_image_with_its_claims(gan, tmp_path) -> None:
    path, record = signed_image(gan, tmp_path)
    assert workspace_keys(create=False).exists  # made on first need
    verdict = verify_file(path)
    assert verdict.ok, verdict.checks
    assert [c.name for c in verdict.checks] == ["manifest", "signature", "trust", "hard binding",
                                                "pixels", "store"]
    said = verdict.claims
    assert said["model"] == "u-gan@1" and said["seed"] == record.seed == 5
    assert said["generation"] == record.id and said["content_hash"] == record.content_hash
    assert said["dataset_hash"] == "d" * 64 and said["request_hash"].startswith("sha256:")
    assert read_provenance(path)["generation"] == record.id  # the text chunks are still there


def test_rejects_altered_pixels(gan, tmp_path) -> None:
    path, _ = signed_image(gan, tmp_path)
    parts = chunks(path.read_bytes())
    pixels = read_pixels(path).copy()
    pixels[0, 0, 0] ^= 0xFF
    edited = dict(chunks(png_bytes(pixels)))
    # the same manifest and text chunks around the edited pixels
    forged = assemble([(t, edited[t] if t == b"IDAT" else d) for t, d in parts])
    path.write_bytes(forged)
    verdict = verify_file(path)
    assert not verdict.ok and {"hard binding", "pixels", "store"} <= failed(verdict)
    assert "signature" not in failed(verdict)  # the claim itself is intact


def test_rejects_an_altered_manifest(gan, tmp_path) -> None:
    path, record = signed_image(gan, tmp_path)
    parts = chunks(path.read_bytes())
    (manifest,) = [d for t, d in parts if t == b"caBX"]
    assert manifest.count(b"u-gan@1") == 1
    forged = manifest.replace(b"u-gan@1", b"u-gbn@1")  # claim another model made it
    path.write_bytes(assemble([(t, forged if t == b"caBX" else d) for t, d in parts]))
    verdict = verify_file(path)
    assert not verdict.ok and "signature" in failed(verdict)


def test_rejects_an_image_signed_by_another_cas_key(gan, tmp_path) -> None:
    _, record = signed_image(gan, tmp_path)
    pixels = read_pixels(Path(record.file))
    other = create_keys(tmp_path / "other-ca")  # a valid chain, but not this workspace's CA
    said = claims(record, Store())
    png = sign_image(png_bytes(pixels), said, "x.png", keys=other)
    path = tmp_path / "other.png"
    path.write_bytes(png)
    verdict = verify_file(path)
    assert failed(verdict) == {"trust"}
    # trusting that CA instead accepts it: trust is what the anchor decides
    assert verify_file(path, trust=other.ca_cert).ok


def test_rejects_an_image_the_store_does_not_know(gan, tmp_path) -> None:
    _, record = signed_image(gan, tmp_path)
    said = {**claims(record, Store()), "generation": "f" * 32}
    path = tmp_path / "unknown.png"
    path.write_bytes(sign_image(png_bytes(read_pixels(Path(record.file))), said, "x.png"))
    verdict = verify_file(path)
    assert failed(verdict) == {"store"}
    assert "not in this workspace" in next(c.detail for c in verdict.checks if c.name == "store")


def test_a_grid_and_the_http_face_carry_verifiable_manifests(gan, tmp_path) -> None:
    result = gan.generate(num_samples=3, seed=2)
    grid = result.save_grid(tmp_path / "grid.png")
    verdict = verify_file(grid)
    assert verdict.ok, verdict.checks
    assert verdict.claims["generations"] == [r.id for r in result.records]
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        body = {"model": "u-gan", "n": 2, "seed": 4, "response_format": "b64_json"}
        reply = api.post("/v1/images/generations", json=body)
        assert reply.status_code == 200, reply.text
        import base64

        for i, item in enumerate(reply.json()["data"]):
            served = tmp_path / f"served-{i}.png"
            served.write_bytes(base64.b64decode(item["b64_json"]))
            v = verify_file(served)
            assert v.ok and v.claims["generation"] == item["generation_id"], v.checks
        gid = reply.json()["data"][0]["generation_id"]
        fetched = api.get(f"/v1/generations/{gid}/content")
        served = tmp_path / "fetched.png"
        served.write_bytes(fetched.content)
        assert verify_file(served).ok


# --- text records ---------------------------------------------------------------------------------


def test_a_text_generations_signed_record(gan, tmp_path) -> None:
    store = Store()
    text = "a poem about nothing"
    record = store.record_generation(model=gan.version, kind="text", request={"prompt": "p", "seed": 3},
                                     seed=3, output=text, file=None, content_hash=text_hash(text),
                                     timings={})
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        reply = api.get(f"/v1/generations/{record.id}/provenance")
        assert reply.status_code == 200, reply.text
        assert api.get(f"/v1/generations/{'0' * 32}/provenance").status_code == 404
    signed = SignedRecord.model_validate(reply.json())
    assert signed.payload["generation"] == record.id and signed.payload["content_hash"] == text_hash(text)
    assert signed.ca_fingerprint == workspace_keys().fingerprint()
    path = tmp_path / "record.json"
    path.write_text(reply.text)
    verdict = verify_file(path)
    assert verdict.ok, verdict.checks
    assert verdict.claims["signed"] == "on request"  # recorded without a seal: signed when asked

    forged = signed.model_copy(update={"payload": {**signed.payload, "seed": 4}})
    path.write_text(forged.model_dump_json())
    assert "signature" in failed(verify_file(path))
    other = create_keys(tmp_path / "other-ca")
    path.write_text(reply.text)
    assert failed(verify_file(path, trust=other.ca_cert)) == {"trust"}

    verdict, again = verify_generation(record.id)
    assert verdict.ok and again.payload == signed.payload


# --- the CLI ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_keys_and_verify_exit_codes(gan, workspace, tmp_path) -> None:
    path, record = signed_image(gan, tmp_path)  # creates the keys on first need
    r = run_cli(["keys", "provenance", "--show"], workspace)
    assert r.returncode == 0, r.stderr
    assert workspace_keys().fingerprint() in r.stdout and "ca.pem" in r.stdout
    r = run_cli(["verify", str(path), "--json"], workspace)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["claims"]["generation"] == record.id
    bad = tmp_path / "bad.png"
    png = bytearray(path.read_bytes())
    pixels = read_pixels(io.BytesIO(bytes(png)))
    edited = dict(chunks(png_bytes(np.ascontiguousarray(255 - pixels))))
    bad.write_bytes(assemble([(t, edited[t] if t == b"IDAT" else d) for t, d in chunks(bytes(png))]))
    r = run_cli(["verify", str(bad)], workspace)
    assert r.returncode == 1 and "NOT verified" in r.stderr and "FAIL" in r.stdout
    r = run_cli(["verify"], workspace)
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    plain = tmp_path / "plain.png"
    Image.fromarray(pixels[..., 0]).save(plain)
    r = run_cli(["verify", str(plain)], workspace)
    assert r.returncode == 1 and "manifest" in r.stdout
