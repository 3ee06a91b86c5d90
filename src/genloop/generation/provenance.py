"""What a genloop output says about itself, signed, and the checks ``genloop verify`` runs.

An image's PNG (``service.image_png``, a grid from ``ImageResult.save_grid``, a replay) carries a
C2PA manifest whose ``org.genloop.generation`` assertion holds the claims of ``claims``: model
``name@N``, seed, the sha256 of the request, the model's dataset hash (its lineage), the
generation id and the pixels' content hash; signed by the workspace's key (``safety/provenance``).
Every generation's record is signed as it is made: ``record_signer`` is the ``sign`` the service
hands ``Store.record_generation``, which keeps the claims' ES256 seal in the row, written in the
same transaction. ``signed_record`` hands that out (a row from before generation-time signing is
signed on request instead, and says so: ``"signed": "on request"``). An image's PNG is signed with
C2PA when first handed out (``signed_image_png``: 5–8 ms, about what drawing a small image takes) and
kept; before signing it, its record is checked against the seal made with it.

``verify_file`` takes a PNG or a signed record's JSON and checks, in order: the C2PA manifest's
signature, that its signer chains to a trusted CA, the hard binding (the file's bytes, pixels
included, are those signed), that the decoded pixels have the claimed content hash, and that the
store's record agrees (the generation exists, with those pixels, model, seed and request, and
still matches what was signed when it was made).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genloop.config import settings
from genloop.errors import CorruptArtifact, InvalidInput, NotFound
from genloop.generation.image import content_hash as pixels_hash
from genloop.generation.image import read_pixels
from genloop.generation.text import content_hash as text_hash
from genloop.safety.provenance import (
    ProvenanceKeys,
    SignedRecord,
    canonical_json,
    keys_dir,
    read_manifest,
    seal,
    sign_png,
    sign_record,
    unseal,
    verify_record,
    workspace_keys,
)
from genloop.store import GenerationRecord, ModelVersion, Store
from genloop.version import __version__

ASSERTION = "org.genloop.generation"
# IPTC's term for media made by a trained model (what C2PA's c2pa.created action names)
TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATOR = {"name": "genloop", "version": __version__}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: a whole PNG ends so
# when a record was signed (its payload's "signed"): as it was made, or when asked (older rows)
AT_GENERATION, ON_REQUEST = "at generation", "on request"


def request_hash(request: dict[str, Any]) -> str:
    """sha256 of a generation's whole request (its canonical JSON)."""
    return "sha256:" + hashlib.sha256(canonical_json(request)).hexdigest()


def dataset_hash(model: str, store: Store) -> str | None:
    """The content hash of the dataset model version ``model`` was trained on (None: imported)."""
    try:
        return store.resolve(model).dataset_hash
    except NotFound:
        return None


def claims(record: GenerationRecord, store: Store) -> dict[str, Any]:
    """What generation ``record``'s signed provenance says about it."""
    return record_claims(record, dataset_hash(record.model, store))


def record_claims(record: GenerationRecord, dataset: str | None) -> dict[str, Any]:
    """``claims`` with the model's dataset hash given (no store read)."""
    return {"generation": record.id, "kind": record.kind, "model": record.model,
            "seed": record.seed, "request_hash": request_hash(record.request),
            "request_id": record.request_id, "dataset_hash": dataset,
            "content_hash": record.content_hash,
            "created": record.created_at.isoformat()}


def record_signer(version: ModelVersion) -> Callable[[GenerationRecord], dict[str, Any]]:
    """What ``Store.record_generation`` calls on each record of ``version`` as it writes it: the
    record's claims sealed (ES256, ``safety.provenance.seal``), to be kept in its row."""
    dataset = version.dataset_hash

    def sign(record: GenerationRecord) -> dict[str, Any]:
        return seal({**record_claims(record, dataset), "signed": AT_GENERATION})
    return sign


def differences(record: GenerationRecord, payload: dict[str, Any], store: Store) -> list[str]:
    """What in the store's ``record`` no longer says what ``payload`` (its signed claims) says:
    the claims that differ, and a text whose output no longer has its content hash."""
    now = claims(record, store)
    changed = sorted(k for k in {*now, *payload} - {"signed"} if now.get(k) != payload.get(k))
    if record.file is None and text_hash(record.output or "") != record.content_hash:  # a text
        changed.append("output (its text no longer has its content hash)")
    return changed


def no_longer_matches(changed: list[str]) -> str:
    return f"the record no longer matches what was signed at generation (it differs in: {', '.join(changed)})"


def making_problems(record: GenerationRecord, store: Store, anchors: str = "") -> list[str]:
    """How generation ``record`` fails the seal made with it: a seal that does not verify (by a
    CA in ``anchors`` or the workspace's own: the store's seals are its keys'), a record that
    differs from it, or none where the workspace seals every generation (it was removed). A row
    from before generation-time signing has none and no problem."""
    if record.signature is None:
        since = store.first_signed_generation()
        if since is not None and record.created_at >= since:
            return [f"generation {record.id} has no signature of its making, though every "
                    f"generation since {since.isoformat(timespec='seconds')} is signed as it is "
                    "made: it was removed"]
        return []
    sealed = unseal(record.signature)
    keys = ProvenanceKeys(keys_dir())
    anchors += keys.ca_pem() if keys.exists else ""
    problems = [f"its signature at generation: {p}" for p in verify_record(sealed, anchors)]
    if changed := differences(record, sealed.payload, store):
        problems.append(no_longer_matches(changed))
    return problems


def sign_image(png: bytes, said: dict[str, Any], title: str,
               keys: ProvenanceKeys | None = None) -> bytes:
    """``png`` with a C2PA manifest: ``said`` as genloop's assertion, and the action that made it
    (created by a trained model, by genloop); signed by ``keys`` (default: the workspace's)."""
    created = {"action": "c2pa.created", "digitalSourceType": TRAINED, "softwareAgent": GENERATOR}
    return sign_png(png, [{"label": ASSERTION, "data": said},
                          {"label": "c2pa.actions", "data": {"actions": [created]}}],
                    title=title, generator=GENERATOR, keys=keys)


def signed_path(record: GenerationRecord) -> Path:
    """Where generation ``record``'s signed PNG is kept once made: ``generations/signed/ab/<id>.png``."""
    return settings().generations_dir / "signed" / record.id[:2] / f"{record.id}.png"


def signed_image_png(record: GenerationRecord, png: bytes, store: Store | None = None,
                     content: str | None = None) -> bytes:
    """Generation ``record``'s ``png`` signed with its claims (``content``: the content hash of
    pixels that are not the recorded ones, e.g. a replay that differs). A recorded generation's
    is signed once and kept (a signature is randomised: kept, the PNG a generation hands out is
    the same bytes every time, in a copied workspace too)."""
    kept = signed_path(record) if content is None else None
    if kept is not None and kept.is_file():
        data = kept.read_bytes()
        if data.startswith(PNG_MAGIC) and data.endswith(PNG_END):  # else lost in a crash: again
            return data
    store = store or Store()
    if record.signature is not None and (
            problems := making_problems(record, store)):
        raise CorruptArtifact(f"generation {record.id}: {problems[0]}; its PNG is not signed")
    said = claims(record, store)
    if content is not None:
        said["content_hash"] = content
    signed = sign_image(png, said, f"{record.id}.png")
    if kept is not None:
        _keep(kept, signed)
    return signed


def _keep(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` by a rename (readers see all or nothing) but without fsync: a
    kept PNG lost to a crash is signed again, and an fsync costs more than the signing (~15 ms)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def grid_signer(model: str, seed: int, request: dict[str, Any], records: list[GenerationRecord],
                dataset: str | None) -> Callable[[bytes], bytes]:
    """Signs a grid PNG of ``records``' images: claims naming each generation and its content
    hash, and the content hash of the grid's own pixels (read back from the PNG it signs)."""
    def sign(png: bytes) -> bytes:
        said = {"kind": "grid", "model": model, "seed": seed, "request_hash": request_hash(request),
                "dataset_hash": dataset, "generations": [r.id for r in records],
                "content_hashes": [r.content_hash for r in records],
                "content_hash": pixels_hash(read_pixels(io.BytesIO(png)))}
        return sign_image(png, said, f"{model.replace('@', '-')}-{seed}.png")
    return sign


def signed_record(record: GenerationRecord, store: Store | None = None) -> SignedRecord:
    """Generation ``record``'s claims as signed when it was made (ES256, the workspace's key);
    a row from before generation-time signing: signed now, marked ``"signed": "on request"``."""
    if record.signature is not None:
        return unseal(record.signature)
    return sign_record({**claims(record, store or Store()), "signed": ON_REQUEST}, workspace_keys())


# --- verification ---------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


@dataclass
class Verdict:
    """Every check run on one file or record, in order, and what it claims."""

    subject: str
    checks: list[Check] = field(default_factory=list)
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def add(self, name: str, problems: list[str], passed: str) -> bool:
        self.checks.append(Check(name, not problems, "; ".join(problems) or passed))
        return not problems


def trust_anchors(trust: Path | None) -> str:
    """The PEM of the CAs to trust: ``trust``'s, else the workspace's CA."""
    if trust is None:
        return workspace_keys(create=False).ca_pem()
    try:
        pem = Path(trust).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:
        raise InvalidInput(f"--trust {trust}: cannot read it ({e})") from None
    if "-----BEGIN CERTIFICATE-----" not in pem:
        raise InvalidInput(f"--trust {trust}: not a PEM certificate (BEGIN CERTIFICATE)")
    return pem


def verify_file(path: Path, *, trust: Path | None = None, store: Store | None = None) -> Verdict:
    """Check a genloop PNG or a signed record (JSON) found on its own; ``store`` None: the
    workspace's (its record is checked too)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InvalidInput(f"{path}: cannot read it ({e.strerror})") from None
    anchors = trust_anchors(trust)
    if data.startswith(PNG_MAGIC):
        return _verify_png(str(path), data, anchors, store or Store())
    try:
        record = SignedRecord.model_validate_json(data)
    except ValueError:
        raise InvalidInput(f"{path}: neither a PNG nor a signed genloop record (JSON)") from None
    return _verify_signed(str(path), record, anchors, store or Store())


def verify_generation(generation_id: str, *, trust: Path | None = None,
                      store: Store | None = None) -> tuple[Verdict, SignedRecord]:
    """Generation ``generation_id``'s signed record (made with it; a row from before that:
    signed now) checked against ``trust`` (default: the workspace's CA) and the store."""
    store = store or Store()
    signed = signed_record(store.get_generation(generation_id), store)
    return _verify_signed(f"generation {generation_id}", signed, trust_anchors(trust), store), signed


def _verify_png(subject: str, data: bytes, anchors: str, store: Store) -> Verdict:
    verdict = Verdict(subject)
    m = read_manifest(data, anchors)
    said = m.assertions.get(ASSERTION) or {}
    verdict.claims = said
    if not verdict.add("manifest", m.failed("manifest."), "a C2PA manifest"):
        return verdict
    binding = m.failed("assertion.dataHash", "assertion.boxesHash")
    trust = m.failed("signingCredential")
    signature = [f for f in m.failures if f not in binding and f not in trust]
    if m.state != "Trusted" and not (binding or trust or signature):
        trust = [f"signingCredential: the manifest is {m.state}, not Trusted"]
    verdict.add("signature", signature, f"valid, signed by {m.signer}")
    verdict.add("trust", trust, "the signer chains to a trusted CA")
    verdict.add("hard binding", binding, "the file's bytes are those signed")
    if not said:
        verdict.add("claims", [f"no {ASSERTION} assertion: not a genloop image"], "")
        return verdict
    try:
        pixels = pixels_hash(read_pixels(io.BytesIO(data)))
    except (OSError, ValueError) as e:  # PIL: a damaged image stream
        verdict.add("pixels", [f"the pixels cannot be decoded ({e})"], "")
        return verdict
    verdict.add("pixels", [] if pixels == said.get("content_hash") else
                [f"the pixels hash to {pixels[:16]}…, the manifest says "
                 f"{str(said.get('content_hash'))[:16]}…"], "the pixels have the claimed hash")
    verdict.add("store", _store_problems(said, pixels, store, anchors),
                "the store's record agrees")
    return verdict


def _store_problems(said: dict[str, Any], pixels: str, store: Store, anchors: str) -> list[str]:
    """How the store's records disagree with an image's claims (a grid: each of its images)."""
    if said.get("kind") == "grid":
        wanted = dict(zip(said.get("generations", []), said.get("content_hashes", []), strict=False))
    else:
        wanted = {said.get("generation"): pixels}
    problems = []
    for gid, content in wanted.items():
        try:
            record = store.get_generation(str(gid))
        except NotFound:
            problems.append(f"generation {gid} is not in this workspace's store")
            continue
        if record.content_hash != content:
            problems.append(f"generation {gid}'s recorded content hash differs from the image's")
        if record.model != said.get("model"):
            problems.append(f"generation {gid} was made by {record.model}, not {said.get('model')}")
        if said.get("kind") != "grid":
            if record.seed != said.get("seed"):
                problems.append(f"generation {gid}'s seed is {record.seed}, not {said.get('seed')}")
            if request_hash(record.request) != said.get("request_hash"):
                problems.append(f"generation {gid}'s request differs from the one signed")
        problems += [f"generation {gid}: {p}" for p in making_problems(record, store, anchors)]
    return problems


def _verify_signed(subject: str, record: SignedRecord, anchors: str, store: Store) -> Verdict:
    verdict = Verdict(subject, claims=record.payload)
    problems = verify_record(record, anchors)
    trust = [p for p in problems if p.startswith("signingCredential")]
    verdict.add("signature", [p for p in problems if p not in trust], "valid ES256 over the record")
    verdict.add("trust", trust, "the signer chains to a trusted CA")
    gid = str(record.payload.get("generation"))
    try:
        stored = store.get_generation(gid)
    except NotFound:
        verdict.add("store", [f"generation {gid} is not in this workspace's store"], "")
        return verdict
    at_generation = record.payload.get("signed") == AT_GENERATION
    if stored.signature is not None and stored.signature.get("payload") == record.payload:
        verdict.add("signed at", [], f"generation ({stored.created_at.isoformat(timespec='seconds')})")
    else:  # a record signed on request, or one the store's own seal does not say
        making = [p for p in making_problems(stored, store, anchors) if not p.startswith("the record")]
        verdict.add("signed at", making, "the store holds the seal made at generation"
                    if stored.signature is not None else "on request: the generation was made "
                    "before generation-time signing, so this vouches for its record as the store "
                    "held it when signed, not as it was made")
    changed = differences(stored, record.payload, store)
    verdict.add("store", [] if not changed else [no_longer_matches(changed)] if at_generation
                else [f"the store's record differs in: {', '.join(changed)}"],
                "the store's record agrees")
    return verdict


def verdict_json(verdict: Verdict, record: SignedRecord | None = None) -> str:
    """The verdict as one JSON line (with the signed ``record`` it checked, if any)."""
    body = {"subject": verdict.subject, "ok": verdict.ok, "claims": verdict.claims,
            "checks": [c.__dict__ for c in verdict.checks]}
    if record is not None:
        body["record"] = record.model_dump(mode="json")
    return json.dumps(body, ensure_ascii=False)
