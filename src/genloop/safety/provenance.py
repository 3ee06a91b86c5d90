"""Signed provenance: a workspace's certificate authority, C2PA manifests on PNGs, signed records.

The C2PA SDK (c2pa-python) refuses a self-signed signing certificate and checks the signer's chain
against trust anchors, so a workspace gets a small public-key infrastructure of its own
(``create_keys``, ``genloop keys provenance``): a root CA (P-256, ``CA:true``, may sign
certificates only) and a signing certificate it issues (P-256, ``CA:false``, key usage
digitalSignature, extended key usage emailProtection and documentSigning: the C2PA SDK accepts
a signer only with one of its listed EKUs). The CA's certificate is what a third party trusts;
its key signs nothing but the signing certificate. Files under ``$GENLOOP_HOME/keys/provenance/``,
keys 0600.

``sign_png`` embeds a C2PA manifest (the claim's assertions, and a hard binding: the hash of
every byte of the file but the manifest's own chunk) and ``read_manifest`` validates one against
given trust anchors. ``sign_record`` / ``verify_record`` do the same for a JSON record (a text
generation's): ES256 over its canonical JSON, with the certificate chain beside it. ``seal`` is
the compact form a database keeps (payload, signature, the signer's fingerprint: ~25 µs to make)
and ``unseal`` puts the chain back; keys replaced by ``create_keys(replace=True)`` leave their
certificates in ``retired/`` so what they sealed still unseals.

Nothing here knows what a generation is: the generation layer says what to sign.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from genloop.atomic import atomic_write_bytes
from genloop.config import settings
from genloop.errors import InvalidInput, NotFound

log = logging.getLogger("genloop.provenance")

# the extended key usages a C2PA claim signer may carry (c2pa-rs valid_eku_oids); we set two
EMAIL_PROTECTION = "1.3.6.1.5.5.7.3.4"
DOCUMENT_SIGNING = "1.3.6.1.5.5.7.3.36"
SIGNER_EKUS = {EMAIL_PROTECTION, DOCUMENT_SIGNING}
VALID_DAYS = 3650  # no timestamp authority: a signature is checked against today's validity


@dataclass(frozen=True)
class ProvenanceKeys:
    """The four files of a workspace's provenance keys (``directory`` = keys/provenance)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def signer_cert(self) -> Path:
        return self.directory / "signer.pem"

    @property
    def signer_key(self) -> Path:
        return self.directory / "signer.key"

    @property
    def exists(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.signer_cert, self.signer_key))

    def ca_pem(self) -> str:
        return self.ca_cert.read_text(encoding="ascii")

    def chain_pem(self) -> str:
        """The signing certificate, then the CA's: what a manifest carries."""
        return self.signer_cert.read_text(encoding="ascii") + self.ca_pem()

    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate (DER), as ``openssl x509 -fingerprint -sha256`` shows it."""
        return fingerprint(self.ca_pem())


def keys_dir() -> Path:
    return settings().home / "keys" / "provenance"


def fingerprint(cert_pem: str) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    der = x509.load_pem_x509_certificate(cert_pem.encode()).public_bytes(serialization.Encoding.DER)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def create_keys(directory: Path | None = None, *, replace: bool = False) -> ProvenanceKeys:
    """Create the CA and its signing certificate in ``directory`` (default: the workspace's);
    existing keys are kept unless ``replace`` (then every image signed before stops verifying
    against the new CA: the old ``ca.pem`` is what verifies them)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

    keys = ProvenanceKeys(Path(directory) if directory else keys_dir())
    if keys.exists and not replace:
        return keys
    if keys.exists:  # the old certificates stay, so records they signed still carry their chain
        retired = _retired(keys, fingerprint(keys.signer_cert.read_text("ascii")))
        retired.mkdir(parents=True, exist_ok=True)
        for cert in (keys.ca_cert, keys.signer_cert):
            atomic_write_bytes(retired / cert.name, cert.read_bytes())
    home = str(settings().home)
    label = hashlib.sha256(home.encode()).hexdigest()[:8]  # tells workspaces' CAs apart

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genloop workspace")])

    now = dt.datetime.now(dt.UTC)
    start, end = now - dt.timedelta(minutes=5), now + dt.timedelta(days=VALID_DAYS)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = subject(f"genloop provenance CA {label}")
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(start).not_valid_after(end)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True,
                                       **usage), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    signer = (x509.CertificateBuilder().subject_name(subject(f"genloop signer {label}"))
              .issuer_name(ca_name).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                           **usage), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION,
                                                    ObjectIdentifier(DOCUMENT_SIGNING)]), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))

    def private(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    keys.directory.mkdir(parents=True, exist_ok=True)
    os.chmod(keys.directory, 0o700)  # so no one else reaches a key even while it is written
    # keys first (0600 from the start), the certificates last: ``exists`` needs signer.pem
    for path, data in ((keys.ca_key, private(ca_key)), (keys.signer_key, private(key))):
        atomic_write_bytes(path, data)
        os.chmod(path, 0o600)
    atomic_write_bytes(keys.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    atomic_write_bytes(keys.signer_cert, signer.public_bytes(serialization.Encoding.PEM))
    _SIGNING.clear()
    return keys


_CREATE = threading.Lock()


def workspace_keys(create: bool = True) -> ProvenanceKeys:
    """The workspace's provenance keys; created on first need (said once, on stderr) unless
    ``create`` is False, when their absence is a NotFound naming the command that makes them."""
    keys = ProvenanceKeys(keys_dir())
    if keys.exists:
        return keys
    if not create:
        raise NotFound(f"no provenance keys in {keys.directory}: run `genloop keys provenance`, "
                       "or pass the signer's CA with --trust CA.pem")
    with _CREATE:
        if not keys.exists:
            create_keys(keys.directory)
            log.warning("created the workspace's provenance CA and signing key in %s "
                        "(fingerprint %s)", keys.directory, keys.fingerprint())
    return keys


# --- C2PA manifests on PNGs ---------------------------------------------------------------------


@dataclass
class _Signing:
    """A signer as a process keeps it: the PEM chain and key (for the C2PA SDK), the loaded key,
    the certificates and both fingerprints (``seal`` reads no file and parses nothing)."""

    chain: bytes
    key: bytes
    private: Any  # cryptography's EllipticCurvePrivateKey
    certificates: list[str]
    ca_fingerprint: str
    signer_fingerprint: str

    @classmethod
    def read(cls, keys: ProvenanceKeys) -> _Signing:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = keys.signer_key.read_bytes()
        private = serialization.load_pem_private_key(key, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise InvalidInput(f"{keys.signer_key}: not an EC private key")
        signer, ca = keys.signer_cert.read_text(encoding="ascii"), keys.ca_pem()
        return cls((signer + ca).encode(), key, private, [signer, ca], fingerprint(ca),
                   fingerprint(signer))


_SIGNING: dict[Path, tuple[float, _Signing]] = {}


def _signing(keys: ProvenanceKeys) -> _Signing:
    """The signer, read once per process (again if the files change)."""
    stamp = keys.signer_cert.stat().st_mtime
    cached = _SIGNING.get(keys.directory)
    if cached is None or cached[0] != stamp:
        cached = (stamp, _Signing.read(keys))
        _SIGNING[keys.directory] = cached
    return cached[1]


_HOMES: dict[tuple[str | None, str], ProvenanceKeys] = {}


def _workspace_signing() -> _Signing:
    """The workspace's signer without settings or three stats per call (``seal`` is on every
    generation's path): its keys remembered per GENLOOP_HOME and working directory."""
    home = (os.environ.get("GENLOOP_HOME"), os.getcwd())
    keys = _HOMES.get(home)
    if keys is not None:
        try:
            return _signing(keys)
        except FileNotFoundError:  # removed since: made again on this need
            pass
    keys = _HOMES[home] = workspace_keys()
    return _signing(keys)


def _c2pa() -> Any:
    try:
        import c2pa
    except ImportError:  # pragma: no cover - a core dependency
        raise InvalidInput("signing images needs c2pa-python: pip install c2pa-python") from None
    return c2pa


OFFLINE = {"remote_manifest_fetch": False, "ocsp_fetch": False}  # never reach the network


def sign_png(png: bytes, assertions: list[dict[str, Any]], *, title: str,
             generator: dict[str, str], keys: ProvenanceKeys | None = None) -> bytes:
    """``png`` with a C2PA manifest of ``assertions`` (``{"label", "data"}`` each), signed ES256
    by the workspace's signing key; no thumbnail (the image is its own)."""
    c2pa = _c2pa()
    signing = _signing(keys or workspace_keys())
    manifest = {"claim_generator_info": [generator], "title": title, "format": "image/png",
                "assertions": assertions}
    context = c2pa.Context(c2pa.Settings.from_dict({
        "builder": {"thumbnail": {"enabled": False}},
        "verify": {**OFFLINE, "verify_after_sign": True}}))
    signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, signing.chain,
                                                       signing.key, None))
    out = io.BytesIO()
    with c2pa.Builder(manifest, context) as builder:
        builder.sign(signer, "image/png", io.BytesIO(png), out)
    return out.getvalue()


@dataclass
class ManifestCheck:
    """What the C2PA SDK found in a file: its validation state (``Trusted``: signature valid,
    hard binding matches and the signer chains to a trust anchor; ``Valid``: all but the trust;
    ``Invalid``; None: no manifest), its failure codes, and the active manifest's assertions."""

    state: str | None
    failures: list[str] = field(default_factory=list)
    assertions: dict[str, Any] = field(default_factory=dict)
    signer: str | None = None

    @property
    def trusted(self) -> bool:
        return self.state == "Trusted" and not self.failures

    def failed(self, *codes: str) -> list[str]:
        """The failures whose code starts with one of ``codes``."""
        return [f for f in self.failures if f.split(":")[0].startswith(codes)]


def read_manifest(data: bytes, trust_pem: str) -> ManifestCheck:
    """Validate the C2PA manifest of PNG ``data`` against the anchors in ``trust_pem`` only (the
    SDK's built-in list is replaced: a genloop image is trusted by its workspace's CA)."""
    c2pa = _c2pa()
    context = c2pa.Context(c2pa.Settings.from_dict({"trust": {"trust_anchors": trust_pem},
                                                    "verify": OFFLINE}))
    try:
        with c2pa.Reader("image/png", io.BytesIO(data), None, context) as reader:
            store = json.loads(reader.json())
    except c2pa.C2paError.ManifestNotFound:
        return ManifestCheck(None, ["manifest.missing: the file has no C2PA manifest"])
    except c2pa.C2paError as e:  # a manifest too damaged to parse
        return ManifestCheck("Invalid", [f"manifest.unreadable: {str(e).splitlines()[0][:200]}"])
    active = store.get("manifests", {}).get(store.get("active_manifest") or "", {})
    results = store.get("validation_results", {}).get("activeManifest", {})
    seen: dict[str, None] = {}
    for status in [*(store.get("validation_status") or []), *(results.get("failure") or [])]:
        seen[f"{status.get('code')}: {status.get('explanation', '')}"] = None
    info = active.get("signature_info") or {}
    return ManifestCheck(store.get("validation_state"), list(seen),
                         {a["label"]: a.get("data") for a in active.get("assertions", [])},
                         info.get("common_name"))


# --- signed JSON records ------------------------------------------------------------------------


class SignedRecord(BaseModel):
    """A record signed by the workspace: ES256 (ECDSA P-256, SHA-256, DER, base64) over
    ``canonical_json(payload)``, with the signer's certificate chain (signer first, CA last)."""

    payload: dict[str, Any]
    algorithm: Literal["ES256"] = "ES256"
    signature: str = Field(description="base64 of the DER-encoded ECDSA signature")
    certificates: list[str] = Field(description="PEM: the signing certificate, then its CA")
    ca_fingerprint: str = Field(description="SHA-256 of the CA certificate: what a verifier trusts")


def canonical_json(payload: dict[str, Any]) -> bytes:
    """Sorted keys, no spaces, UTF-8: one byte string per payload, whoever serialises it."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def seal(payload: dict[str, Any], keys: ProvenanceKeys | None = None) -> dict[str, Any]:
    """``payload`` signed (ES256 over its canonical JSON) in the compact form a store keeps:
    ``{"payload", "algorithm", "signature", "signer"}`` (the signing certificate's fingerprint;
    ``unseal`` puts the chain back)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    signing = _signing(keys) if keys is not None else _workspace_signing()
    signature = signing.private.sign(canonical_json(payload), ec.ECDSA(hashes.SHA256()))
    return {"payload": payload, "algorithm": "ES256",
            "signature": base64.b64encode(signature).decode(), "signer": signing.signer_fingerprint}


def _retired(keys: ProvenanceKeys, signer: str) -> Path:
    """Where replaced keys' certificates stay: ``retired/<the signer's fingerprint, 16 hex>``."""
    return keys.directory / "retired" / signer.replace(":", "")[:16].lower()


def _chain_of(signer: str, keys: ProvenanceKeys) -> list[str] | None:
    """The certificates (signer, CA) of the signer with fingerprint ``signer``: the workspace's
    now, or one it had before its keys were replaced (``retired/``); None: neither."""
    if keys.exists and _signing(keys).signer_fingerprint == signer:
        return _signing(keys).certificates
    old = _retired(keys, signer)
    if (old / "signer.pem").is_file() and fingerprint((old / "signer.pem").read_text("ascii")) == signer:
        return [(old / "signer.pem").read_text("ascii"), (old / "ca.pem").read_text("ascii")]
    return None


def unseal(sealed: dict[str, Any], keys: ProvenanceKeys | None = None) -> SignedRecord:
    """What ``seal`` made, with its certificate chain, as a third party checks it (no
    certificates: its signer is not among this workspace's keys, and it will not verify)."""
    chain = _chain_of(str(sealed.get("signer")), keys or ProvenanceKeys(keys_dir())) or []
    return SignedRecord(payload=sealed["payload"], algorithm=sealed.get("algorithm", "ES256"),
                        signature=sealed["signature"], certificates=chain,
                        ca_fingerprint=fingerprint(chain[1]) if len(chain) > 1 else "")


def sign_record(payload: dict[str, Any], keys: ProvenanceKeys | None = None) -> SignedRecord:
    keys = keys or workspace_keys()
    return unseal(seal(payload, keys), keys)


def verify_record(record: SignedRecord, trust_pem: str) -> list[str]:
    """The problems with ``record`` (none: it verifies): its signing certificate must be issued
    by a CA in ``trust_pem``, valid today, a signer (EKU, not a CA), and its key must have signed
    exactly ``canonical_json(record.payload)``."""
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    if not record.certificates:
        return ["signingCredential.untrusted: the record carries no certificate (its signer is "
                "not among this workspace's keys)"]
    try:
        leaf = x509.load_pem_x509_certificate(record.certificates[0].encode())
        anchors = x509.load_pem_x509_certificates(trust_pem.encode())
    except (ValueError, IndexError) as e:
        return [f"certificates: not readable PEM ({e})"]
    problems = []
    issuer = None
    for anchor in anchors:
        try:
            leaf.verify_directly_issued_by(anchor)
            issuer = anchor
        except (ValueError, TypeError, InvalidSignature):
            continue
    if issuer is None:
        problems.append("signingCredential.untrusted: the signing certificate is not issued by "
                        "a trusted CA")
    now = dt.datetime.now(dt.UTC)
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        problems.append("signingCredential.expired: the signing certificate is not valid today")
    try:
        ekus = {e.dotted_string for e in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value}
    except x509.ExtensionNotFound:
        ekus = set()
    if not ekus & SIGNER_EKUS:
        problems.append("signingCredential.invalid: the certificate is not for signing documents")
    public = leaf.public_key()
    try:
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise InvalidSignature
        public.verify(base64.b64decode(record.signature), canonical_json(record.payload),
                      ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        problems.append("claimSignature.mismatch: the signature does not match the payload")
    return problems
