"""A Hugging Face causal LM directory (or a Hub repository, pinned) → the version ``NAME@1``.

``import_model`` reads ``config.json``, the ``*.safetensors`` weights (``.bin``/``.pt`` pickles
are refused by name), ``tokenizer.json`` with its special tokens (``tokenizer_config.json``,
``special_tokens_map.json``) and the chat template (``chat_template.jinja`` or the
``chat_template`` of ``tokenizer_config.json``); it checks them (the tokenizer fits the embedding,
transformers knows the architecture, every weight is there), stages a ``ModelDir`` of family
``hf`` beside the registry and registers it in one step, so a refused import leaves nothing.
The lineage names the source, its revision and the sha256 of every file read.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from genloop.config import settings
from genloop.errors import InvalidInput
from genloop.hub import encoders
from genloop.models.hf import FAMILY, HFConfig, HFNetwork, transformers_config
from genloop.models.io import PICKLE_MAGIC
from genloop.models.modeldir import ModelDir
from genloop.store import ModelVersion, Store, validate_model_name
from genloop.tokenizers import HFTokenizer

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# org/name, or a bare legacy id the Hub still serves (``gpt2`` is ``openai-community/gpt2``)
REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja", "generation_config.json")


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_model(src: str | Path, name: str, store: Store | None = None, *,
                 revision: str | None = None) -> ModelVersion:
    """Register the model at ``src`` (a directory, or a Hub repository id ``org/name``
    downloaded at ``revision``, pinned to its commit) as ``name``'s next version."""
    store = store or Store()
    validate_model_name(name)
    path = Path(src).expanduser()
    pinned = revision
    if not path.is_dir():
        if not REPO_ID.match(str(src)) or path.exists():
            raise InvalidInput(f"{src}: no such model directory (nor a Hub repository id org/name)")
        from genloop.hub.download import download

        try:
            path, pinned = download(str(src), revision)
        except InvalidInput as e:
            if "/" in str(src):
                raise
            raise InvalidInput(f"{src}: no such model directory; as a Hub id: {e}") from None
    directory = check_directory(path)
    hf_config = read_json(directory / "config.json")
    weights = sorted(directory.glob("*.safetensors"))
    hashes = {p.name: sha256(p) for p in [directory / "config.json", *weights,
                                          *(directory / f for f in TOKENIZER_FILES)] if p.is_file()}
    if encoders.is_encoder(hf_config):
        return encoders.import_encoder(directory, name, store, hashes, revision=pinned,
                                       origin=str(src))
    tokenizer = read_tokenizer(directory, hf_config)
    config = _config(directory, hf_config, tokenizer)
    network = load_pretrained(directory, config)
    lineage = {"imported_from": str(src), "revision": pinned, "files": hashes}
    if defaults := sampling_defaults(directory):
        lineage["sampling_defaults"] = defaults
    staging = ModelDir(settings().models_dir / f".staging-{uuid.uuid4().hex[:8]}")
    staging.path.mkdir(parents=True)
    try:
        staging.write_network(FAMILY, config, network)
        staging.write_tokenizer(tokenizer)
        if (template := chat_template(directory)) is not None:
            staging.write_chat_template({"jinja": template, "stop": [],
                                         "tokens": {"bos_token": tokenizer.bos or "",
                                                    "eos_token": tokenizer.eos}})
        recipe = {"name": name, "model": {"family": FAMILY.name, "preset": "tiny",
                                          "config": config.model_dump()},
                  "train": {"lr": 5e-4}}  # a tune's default lr is a tenth: 5e-5
        staging.write_record(recipe_yaml=yaml.safe_dump(recipe, sort_keys=False), metrics={},
                             lineage=lineage, samples=[])
        version = store.register_model(name, staging.path, family=FAMILY.name, parent=None)
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    ModelDir(Path(version.path)).write_card(card(version.ref, hf_config, config, lineage,
                                                 template is not None, tokenizer.ends))
    return version


def check_directory(path: Path) -> Path:
    """``path`` if it holds a config and safetensors weights; pickles are refused by name."""
    if not (path / "config.json").is_file():
        raise InvalidInput(f"{path}: no config.json (not a Hugging Face model directory)")
    if not list(path.glob("*.safetensors")):
        pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise InvalidInput(f"{path}: only pickle weights ({', '.join(pickles)}); genloop loads "
                               "safetensors only (convert them in a trusted environment)")
        raise InvalidInput(f"{path}: no *.safetensors weights")
    for p in path.glob("*.safetensors"):
        with p.open("rb") as f:
            if f.read(8).startswith(PICKLE_MAGIC):
                raise InvalidInput(f"{p}: a pickle named .safetensors; genloop loads safetensors only")
    return path


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidInput(f"{path}: not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{path}: not a JSON object")
    return data


def _token(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def read_tokenizer(directory: Path, hf_config: dict[str, Any]) -> HFTokenizer:
    """The directory's ``tokenizer.json`` with its eos, bos and unk tokens."""
    file = directory / "tokenizer.json"
    if not file.is_file():
        raise InvalidInput(f"{directory}: no tokenizer.json (genloop reads fast tokenizers only)")
    specials: dict[str, Any] = {}
    for extra in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
        if (directory / extra).is_file():
            specials.update({k: v for k, v in read_json(directory / extra).items() if v is not None})
    from tokenizers import Tokenizer as TokenizerFile

    try:
        raw = TokenizerFile.from_file(str(file))
    except Exception as e:  # the tokenizers library raises its own exception type
        raise InvalidInput(f"{file}: not a readable tokenizer ({str(e).splitlines()[0][:120]})") from None
    ends = end_tokens(directory, hf_config, raw)
    eos = _token(specials.get("eos_token")) or (ends[0] if ends else None)
    if eos is None:
        raise InvalidInput(f"{directory}: the tokenizer names no end-of-text token (eos_token)")
    try:
        return HFTokenizer(raw, eos, _token(specials.get("bos_token")),
                           _token(specials.get("unk_token")), ends)
    except ValueError as e:
        raise InvalidInput(f"{directory}: {e}") from None


def end_tokens(directory: Path, hf_config: dict[str, Any], raw: Any) -> list[str]:
    """The tokens that end a generation: ``eos_token_id`` (an id or a list of ids: chat models
    end a turn with their own token) of ``generation_config.json``, else of ``config.json``, as
    transformers' ``generate`` reads them."""
    ids = generation_config(directory).get("eos_token_id", hf_config.get("eos_token_id"))
    ids = [ids] if isinstance(ids, int) else ids if isinstance(ids, list) else []
    tokens = []
    for i in ids:
        token = raw.id_to_token(i) if isinstance(i, int) and i >= 0 else None
        if token is None:
            raise InvalidInput(f"{directory}: eos_token_id {i!r} is not a token of tokenizer.json")
        tokens.append(token)
    return tokens


SAMPLING_KEYS = ("do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
                 "max_new_tokens")


def generation_config(directory: Path) -> dict[str, Any]:
    """``generation_config.json`` of ``directory`` ({} without one)."""
    file = directory / "generation_config.json"
    return read_json(file) if file.is_file() else {}


def sampling_defaults(directory: Path) -> dict[str, Any]:
    """The sampling settings the checkpoint suggests (recorded on the card and in the lineage;
    genloop's requests keep their own defaults, so a request means the same on every model)."""
    found = generation_config(directory)
    return {k: found[k] for k in SAMPLING_KEYS if found.get(k) is not None}


def _config(directory: Path, hf_config: dict[str, Any], tokenizer: HFTokenizer) -> HFConfig:
    transformers_config(hf_config)  # an unknown architecture fails here, in one line
    embedding = hf_config.get("vocab_size")
    if not isinstance(embedding, int) or embedding <= 0:
        raise InvalidInput(f"{directory}/config.json: no vocab_size")
    if tokenizer.vocab_size > embedding:
        raise InvalidInput(f"{directory}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                           f"embedding only {embedding} rows: they do not belong together")
    try:
        # ids the tokenizer lacks (a padded embedding) are never drawn: see HFNetwork.known
        size = tokenizer.vocab_size if tokenizer.vocab_size < embedding else None
        return HFConfig(hf_config=hf_config, tokenizer_size=size)
    except ValueError as e:
        raise InvalidInput(f"{directory}/config.json: {str(e).splitlines()[-1].strip()}") from None


def load_pretrained(directory: Path, config: HFConfig) -> HFNetwork:
    """The network with the directory's weights (fp32); a missing or misshapen weight is refused."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        lm, info = AutoModelForCausalLM.from_pretrained(
            directory, config=transformers_config(config.hf_config), dtype=torch.float32,
            use_safetensors=True, output_loading_info=True, local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        why = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise InvalidInput(f"{directory}: transformers cannot load it ({why})") from None
    missing = list(info.get("missing_keys") or []) + [str(m) for m in info.get("mismatched_keys") or []]
    if missing:
        raise InvalidInput(f"{directory}: the weights do not match config.json (missing or "
                           f"misshapen: {missing[0]})")
    return HFNetwork.wrap(config, lm.eval())


def chat_template(directory: Path) -> str | None:
    """The model's jinja chat template: chat_template.jinja, else tokenizer_config.json's."""
    if (directory / "chat_template.jinja").is_file():
        return (directory / "chat_template.jinja").read_text(encoding="utf-8")
    if (directory / "tokenizer_config.json").is_file():
        template = read_json(directory / "tokenizer_config.json").get("chat_template")
        if isinstance(template, str):
            return template
        if isinstance(template, list):  # named templates: the default one
            named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
            return named.get("default")
    return None


def card(ref: str, hf_config: dict[str, Any], config: HFConfig, lineage: dict[str, Any],
         chat: bool, tokenizer_ends: Sequence[str] = ()) -> str:
    files = "\n".join(f"| `{n}` | `{h}` |" for n, h in sorted(lineage["files"].items()))
    revision = f" at revision `{lineage['revision']}`" if lineage.get("revision") else ""
    template = "the model's own jinja template" if chat else "genloop's transcript template"
    ends = ", ".join(f"`{t}`" for t in tokenizer_ends) or "the tokenizer's eos"
    suggested = ", ".join(f"{k} {v}" for k, v in lineage.get("sampling_defaults", {}).items())
    suggested = (f"- suggested sampling (generation_config.json; not applied, genloop's "
                 f"request defaults hold): {suggested}\n" if suggested else "")
    return (f"# {ref}\n\nImported from `{lineage['imported_from']}`{revision}: a Hugging Face "
            f"`{hf_config.get('model_type')}` causal language model "
            f"({', '.join(hf_config.get('architectures') or [])}), family `hf`.\n\n"
            f"- vocabulary {config.vocab_size}, context {config.block_size} tokens\n"
            f"- chat: {template}\n"
            f"- generation ends at {ends}\n{suggested}\n"
            f"## Files (sha256)\n\n| file | sha256 |\n|---|---|\n{files}\n")
