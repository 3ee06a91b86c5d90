"""A ``gpt`` version → an ONNX decoder with a KV cache, fp32 or int8, run by onnxruntime.

The graph (``Decoder``) is one step of decoding for any batch, whatever each row's position:

    inputs   input_ids (B, T) int64, past_lengths (B,) int64,
             past_keys, past_values (L, B, nh, P, hs) float32 — row b's first past_lengths[b]
             positions count, the rest is padding (rows of different lengths share a step)
    outputs  logits (B, T, V), new_keys, new_values (L, B, nh, T, hs): the keys and values of
             the T new positions, which the caller writes into its own cache (``hub/ort.py``)

Positions are ``past_lengths[b] + t``; a new token sees its row's counted past and the new
tokens up to itself. A prefill is the same graph with P = 0. Attention scores the past and the
new keys separately and joins only the scores, so the cache itself is never concatenated.

``int8``: onnxruntime's ``quantize_dynamic`` (weights of every MatMul int8, per output channel;
activations quantized at run time from their observed range). This route lasts where
``torch.ao.quantization`` does not: PyTorch's documentation marks ``torch.ao.quantization`` for
removal in favour of torchao, whereas onnxruntime's quantizer is the maintained tool of the
runtime that executes the graph (its VNNI / AMX int8 kernels), and it works on the ONNX file
alone, so it does not depend on PyTorch's internals at all.

A variant lives in the version directory (``ModelDir.variant_dir``: ``model.onnx`` and
``variant.json``), is served as ``name@N:onnx`` / ``name@N:int8``, and its quality — validation
bits per character against the fp32 network on the dataset the version was trained on — is
written into ``variant.json`` and onto the version's card.

``hf`` versions (imported checkpoints) export through ``hub/onnx_hf.py``: the same interface,
transformers' own forward inside, so ``hub/ort.py`` serves both. An imported version has no
dataset of its own: ``make_variant(..., text=FILE)`` measures the quality on a .txt / .jsonl.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from genloop.atomic import atomic_dir, atomic_write_json, atomic_write_text
from genloop.data.folder import read_folder
from genloop.data.text import jsonl_texts, read_text_file
from genloop.errors import CorruptArtifact, InvalidInput, NotFound
from genloop.hub.adapters import base_dirs
from genloop.hub.onnx_hf import CacheDims, HFDecoder
from genloop.hub.onnx_hf import cache_dims as hf_cache_dims
from genloop.models.gpt import GPT, Block, GPTConfig, modern_options
from genloop.models.hf import HFNetwork
from genloop.models.modeldir import ModelDir
from genloop.store import ModelVersion, Store, split_variant
from genloop.tokenizers import Tokenizer

DECODER_FILE = "model.onnx"
META_FILE = "variant.json"
VARIANTS = {"onnx": "fp32", "int8": "int8"}  # servable variant → the precision of its weights
OPSET = 18
CHECK_TOLERANCE = 1e-4  # fp32 graph vs PyTorch, max |Δ logit|
EVAL_TOKENS = 65_536  # validation tokens the quality figure reads (the split's first ones)
CARD_HEADING = "## Servable variants"


class Decoder(nn.Module):
    """One decoding step of a ``GPT`` as the exported graph computes it (see the module doc)."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, past_lengths: torch.Tensor, past_keys: torch.Tensor,
                past_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        m, c = self.model, self.model.config
        B, T = input_ids.shape
        P = past_keys.shape[3]
        nh = c.n_head
        hs = c.n_embd // nh
        t = torch.arange(T, device=input_ids.device)
        assert m.wpe is not None  # learned positions: ``decoder_of`` refuses rotary ones
        x = m.wte(input_ids) + m.wpe(past_lengths[:, None] + t[None, :])
        counted = (torch.arange(P, device=input_ids.device)[None, :] < past_lengths[:, None])
        counted = counted[:, None, None, :]  # (B, 1, 1, P)
        causal = (t[None, :] <= t[:, None])[None, None]  # (1, 1, T, T)
        scale = 1.0 / math.sqrt(hs)
        keys, values = [], []
        for i, module in enumerate(m.blocks):
            block = cast(Block, module)
            q, k, v = block.attn.qkv(block.ln_1(x)).view(B, T, 3, nh, hs).unbind(2)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, nh, T, hs)
            past = torch.matmul(q, past_keys[i].transpose(-1, -2)) * scale
            new = torch.matmul(q, k.transpose(-1, -2)) * scale
            lowest = torch.finfo(past.dtype).min
            scores = torch.cat([past.masked_fill(~counted, lowest), new.masked_fill(~causal, lowest)],
                               dim=-1)
            w = torch.softmax(scores, dim=-1)
            y = torch.matmul(w[..., :P], past_values[i]) + torch.matmul(w[..., P:], v)
            x = x + block.attn.proj(y.transpose(1, 2).reshape(B, T, c.n_embd))
            x = x + block.mlp(block.ln_2(x))
            keys.append(k)
            values.append(v)
        return m.head(m.ln_f(x)), torch.stack(keys), torch.stack(values)


Exportable = GPT | HFNetwork


def gpt_dims(config: GPTConfig) -> CacheDims:
    return (config.n_layer, config.n_head, config.n_embd // config.n_head)


def cache_shape(config: GPTConfig | CacheDims, batch: int, length: int
                ) -> tuple[int, int, int, int, int]:
    """(L, B, nh, P, hs): the shape of ``past_keys`` / ``new_keys`` (``config``: a gpt config,
    or the (layers, heads, head size) of any exported decoder)."""
    layers, heads, size = gpt_dims(config) if isinstance(config, GPTConfig) else config
    return (layers, batch, heads, length, size)


def decoder_of(model: Exportable) -> tuple[nn.Module, CacheDims]:
    """The module the graph is traced from, and the dimensions of its cache."""
    if isinstance(model, HFNetwork):
        return HFDecoder(model), hf_cache_dims(model)
    # the decoder graph below has learned positions and plain attention; any MLP works
    if odd := [o for o in modern_options(model.config) if not o.startswith("mlp=")]:
        raise InvalidInput(f"ONNX export does not support the gpt option {odd[0]}: "
                           "export a model trained without it")
    return Decoder(model), gpt_dims(model.config)


def export_decoder(model: Exportable, path: Path) -> float:
    """Write ``model``'s decoder graph to ``path``; check it against PyTorch's logits (a prefill
    of two rows, then one cached step for rows at different lengths) and return the largest
    |Δ logit|; CorruptArtifact when it exceeds ``CHECK_TOLERANCE``."""
    import warnings

    import onnx

    model = model.float().eval()
    config = model.config
    decoder, cache = decoder_of(model)
    dims = {"batch": torch.export.Dim("batch", min=1, max=4096),
            "seq": torch.export.Dim("seq", min=1, max=config.block_size),
            "past": torch.export.Dim("past", min=0, max=config.block_size)}
    T = min(3, config.block_size - 1)
    example = (torch.zeros(2, T, dtype=torch.long), torch.tensor([2, 1]),
               torch.zeros(cache_shape(cache, 2, 2)), torch.zeros(cache_shape(cache, 2, 2)))
    with warnings.catch_warnings(), _quiet("torch.onnx"), \
            tempfile.TemporaryDirectory(prefix="genloop-onnx-") as scratch:
        warnings.simplefilter("ignore")
        raw = Path(scratch) / DECODER_FILE  # the exporter puts the weights in a file beside it
        torch.onnx.export(
            decoder, example, str(raw), dynamo=True, optimize=True, opset_version=OPSET,
            input_names=["input_ids", "past_lengths", "past_keys", "past_values"],
            output_names=["logits", "new_keys", "new_values"],
            dynamic_shapes={"input_ids": {0: dims["batch"], 1: dims["seq"]},
                            "past_lengths": {0: dims["batch"]},
                            "past_keys": {1: dims["batch"], 3: dims["past"]},
                            "past_values": {1: dims["batch"], 3: dims["past"]}},
            verbose=False,
        )
        onnx.save_model(onnx.load(str(raw)), str(path))  # one self-contained file
    diff = check_decoder(model, session(path))
    if diff > CHECK_TOLERANCE:
        raise CorruptArtifact(f"{path}: the exported decoder's logits differ from PyTorch's by "
                              f"{diff:.2e} (more than {CHECK_TOLERANCE:g})")
    return diff


def session(path: Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session over ``path`` (``threads``: intra-op threads, default torch's)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_decoder(sess: Any, ids: np.ndarray, past_lengths: np.ndarray, past_keys: np.ndarray,
                past_values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    logits, keys, values = sess.run(None, {
        "input_ids": np.ascontiguousarray(ids, dtype=np.int64),
        "past_lengths": np.ascontiguousarray(past_lengths, dtype=np.int64),
        "past_keys": np.ascontiguousarray(past_keys, dtype=np.float32),
        "past_values": np.ascontiguousarray(past_values, dtype=np.float32)})
    return logits, keys, values


def prefill_logits(sess: Any, config: GPTConfig | CacheDims, ids: np.ndarray) -> np.ndarray:
    """Logits (B, T, V) of whole windows ``ids`` (B, T), no past."""
    empty = np.zeros(cache_shape(config, ids.shape[0], 0), np.float32)
    return run_decoder(sess, ids, np.zeros(ids.shape[0], np.int64), empty, empty)[0]


@torch.no_grad()
def check_decoder(model: Exportable, sess: Any) -> float:
    """Largest |Δ logit| between the graph and PyTorch: a prefill of two prompts of 5 tokens,
    then one step of both with the second row's past cut to 3 positions (rows at different
    lengths in one step, the padding masked)."""
    config = model.config
    dims = decoder_of(model)[1]
    n = min(5, config.block_size - 1)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (2, n + 1), generator=gen)
    logits, keys, values = run_decoder(sess, ids[:, :n].numpy(), np.zeros(2, np.int64),
                                       *(np.zeros(cache_shape(dims, 2, 0), np.float32),) * 2)
    diff = float(np.abs(logits - model(ids[:, :n]).numpy()).max())
    short = max(1, n - 2)
    lengths = np.array([n, short])
    step, _, _ = run_decoder(sess, ids[:, n:].numpy(), lengths, keys, values)
    first = model(ids)[0, -1]
    second = model(torch.cat([ids[1:, :short], ids[1:, n:]], dim=1))[0, -1]
    expected = torch.stack([first, second]).numpy()
    return max(diff, float(np.abs(step[:, -1] - expected).max()))


def quantize(src: Path, dst: Path, op_types: tuple[str, ...] = ("MatMul",)) -> None:
    """``src``'s MatMul weights int8 (per output channel), activations dynamic: onnxruntime's
    ``quantize_dynamic``. ``op_types``: hf graphs add ``Gemm`` (GPT-2's ``Conv1D`` is an
    ``addmm``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet(""):  # its advice to pre-process goes to the root logger
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=list(op_types))


@contextlib.contextmanager
def _quiet(logger: str) -> Any:
    """The library's warnings of ``logger`` (and below) held back while it runs: the exporter
    lists the torchvision operators it skips, the quantizer advises pre-processing; neither is
    news to a genloop user, and an export's check against PyTorch's logits says what matters."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


# --- quality ------------------------------------------------------------------------------------


def _characters(tokenizer: Tokenizer, ids: np.ndarray) -> int:
    """Characters the scored tokens stand for (as ``evaluation.text.count_characters``)."""
    if tokenizer.kind == "char":
        return len(ids) - 1
    tail = [int(i) for i in ids[1:]]
    return len(tokenizer.decode(tail)) + sum(1 for i in tail if i == tokenizer.eos_id)


def bits_per_char(logits_fn: Any, ids: np.ndarray, block: int, tokenizer: Tokenizer,
                  batch_size: int = 8) -> float:
    """Bits per character of ``ids`` read in non-overlapping windows of ``block`` (the last one
    right-aligned, its overlap not scored twice), as the training's final evaluation reads it."""
    n = len(ids) - 1
    block = min(block, n)
    ends = list(range(block, n + 1, block))
    if ends[-1] != n:
        ends.append(n)
    arr = torch.from_numpy(np.asarray(ids, dtype=np.int64))
    total, scored = 0.0, 0
    for i in range(0, len(ends), batch_size):
        chunk = ends[i : i + batch_size]
        x = torch.stack([arr[e - block : e] for e in chunk])
        y = torch.stack([arr[e - block + 1 : e + 1] for e in chunk])
        for row, e in enumerate(chunk):
            first = max(0, scored - (e - block))
            y[row, :first] = -100
            scored = e
        logits = torch.as_tensor(logits_fn(x))
        total += F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1),
                                 ignore_index=-100, reduction="sum").item()
    return total / max(_characters(tokenizer, ids), 1) / math.log(2)


def validation_ids(version: ModelVersion, store: Store, tokens: int = EVAL_TOKENS
                   ) -> np.ndarray | None:
    """The first ``tokens`` + 1 validation tokens of the dataset ``version`` was trained on
    (None: no such dataset in this workspace, or one without a text validation split)."""
    if not version.dataset_hash:
        return None
    try:
        folder = read_folder(Path(store.get_dataset(version.dataset_hash).path))
    except (NotFound, CorruptArtifact, OSError):
        return None
    ids = folder.arrays.get("val_ids")
    return None if ids is None or len(ids) < 2 else np.asarray(ids[: tokens + 1])


def text_ids(tokenizer: Tokenizer, path: Path, field: str = "text", tokens: int = EVAL_TOKENS
             ) -> np.ndarray:
    """The first ``tokens`` + 1 tokens of a .txt (one document) or .jsonl (each row's
    ``field``), each document preceded by the end-of-text token, as training reads a corpus."""
    path = Path(path)
    if path.suffix.lower() not in (".txt", ".jsonl"):
        raise InvalidInput(f"{path}: give a .txt or .jsonl file")
    docs = [read_text_file(path)] if path.suffix.lower() == ".txt" else jsonl_texts(path, field)
    ids = [i for d in docs if d for i in (tokenizer.eos_id, *tokenizer.encode(d))]
    if len(ids) < 3:
        raise InvalidInput(f"{path} holds too little text to measure a variant on")
    return np.asarray(ids[: tokens + 1], dtype=np.int64)


@torch.no_grad()
def measure_quality(model: Exportable, sess: Any, tokenizer: Tokenizer, ids: np.ndarray | None,
                    on: str | None = None) -> dict[str, Any]:
    """Bits/char of the fp32 network and of the graph on the same tokens (``on``: the text
    file they came from, when not the version's validation split)."""
    if ids is None:
        return {"measured": False, "why": "the version's dataset (a text validation split) is not "
                                          "in this workspace: pass a text (--text FILE)"}
    block = model.config.block_size
    dims = decoder_of(model)[1]
    fp32 = bits_per_char(lambda x: model(x), ids, block, tokenizer)
    graph = bits_per_char(lambda x: prefill_logits(sess, dims, x.numpy()), ids, block, tokenizer)
    return {"measured": True, "tokens": int(len(ids) - 1), "fp32_bits_per_char": fp32,
            "bits_per_char": graph, "bits_per_char_delta": graph - fp32,
            **({"text": on} if on else {})}


# --- variants -----------------------------------------------------------------------------------


def _base(ref: str, store: Store) -> tuple[ModelVersion, ModelDir, Exportable, Tokenizer]:
    version = store.resolve(split_variant(ref)[0])
    directory = ModelDir(Path(version.path))
    # an adapter version: folded into its base, the graph is one plain network
    family, _config, network = directory.load(base=base_dirs(store), merged=True)
    if not (type(network) is GPT or isinstance(network, HFNetwork)):
        raise InvalidInput(f"{version.ref} is a {family.name} model: ONNX export and int8 "
                           "variants are built for the gpt and hf families")
    tokenizer = directory.tokenizer()
    if tokenizer is None:
        raise CorruptArtifact(f"{directory.path}: a text model without its tokenizer")
    return version, directory, network, tokenizer


def make_variant(ref: str, variant: str = "int8", store: Store | None = None, *,
                 eval_tokens: int = EVAL_TOKENS, text: Path | None = None,
                 field: str = "text") -> dict[str, Any]:
    """Build servable variant ``variant`` (``onnx``: fp32, ``int8``) of version ``ref`` into its
    directory, with its quality on the card; its ``variant.json`` content. The quality is read
    on the version's validation split, or on ``text`` (a .txt / .jsonl, its ``field``) when
    given: an imported version has no dataset of its own. A variant already built is returned
    as it is (a version and its variants are immutable), except that ``text`` measures its
    quality again on that text (the measurement, not the graph, is what changes)."""
    if variant not in VARIANTS:
        raise InvalidInput(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")
    store = store or Store()
    version, directory, network, tokenizer = _base(ref, store)
    ids = (text_ids(tokenizer, text, field, eval_tokens) if text is not None
           else validation_ids(version, store, eval_tokens))
    on = str(text) if text is not None else None
    final = directory.variant_dir(variant)
    if (final / META_FILE).is_file():
        meta = read_meta(final)
        if text is not None:
            meta["quality"] = measure_quality(network, session(final / DECODER_FILE), tokenizer,
                                              ids, on)
            atomic_write_json(final / META_FILE, meta)
            _write_card(directory)
        return meta
    hf = isinstance(network, HFNetwork)
    with tempfile.TemporaryDirectory(prefix="genloop-onnx-") as scratch, atomic_dir(final) as tmp:
        fp32 = Path(scratch) / DECODER_FILE
        check = export_decoder(network, fp32)
        if variant == "int8":
            quantize(fp32, tmp / DECODER_FILE, ("MatMul", "Gemm") if hf else ("MatMul",))
        else:
            shutil.copyfile(fp32, tmp / DECODER_FILE)
        quality = measure_quality(network, session(tmp / DECODER_FILE), tokenizer, ids, on)
        meta = {"variant": variant, "of": version.ref, "format": "onnx", "opset": OPSET,
                "family": "hf" if hf else "gpt", "cache": list(decoder_of(network)[1]),
                "precision": VARIANTS[variant],
                "quantization": (f"onnxruntime quantize_dynamic: {'MatMul/Gemm' if hf else 'MatMul'} "
                                 "weights int8 per channel, activations dynamic")
                if variant == "int8" else None,
                "weights_sha256": directory.weights_sha256(),  # an adapter: its own file
                "check_max_abs_logit_diff": check, "quality": quality,
                "inputs": ["input_ids", "past_lengths", "past_keys", "past_values"],
                "outputs": ["logits", "new_keys", "new_values"]}
        atomic_write_json(tmp / META_FILE, meta)
    _write_card(directory)
    return meta


def read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((Path(path) / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptArtifact(f"{Path(path) / META_FILE}: unreadable ({e})") from None
    if not isinstance(meta, dict):
        raise CorruptArtifact(f"{Path(path) / META_FILE}: not an object")
    return meta


def card_section(directory: ModelDir) -> str:
    """The card's section on the version's variants: precision and validation bits/char vs fp32."""
    lines = [CARD_HEADING, "", "| variant | precision | bits/char | fp32 bits/char | delta | "
             "tokens read |", "|---|---|---|---|---|---|"]
    for name in directory.variants():
        meta = read_meta(directory.variant_dir(name))
        q = meta.get("quality", {})
        if q.get("measured"):
            lines.append(f"| `{meta['of']}:{name}` | {meta['precision']} | {q['bits_per_char']:.4f} "
                         f"| {q['fp32_bits_per_char']:.4f} | {q['bits_per_char_delta']:+.4f} | "
                         f"{q['tokens']:,}{' of ' + Path(q['text']).name if q.get('text') else ''} |")
        else:
            lines.append(f"| `{meta['of']}:{name}` | {meta['precision']} | not measured: "
                         f"{q.get('why', '')} | | | |")
    lines += ["", "ONNX decoder with a KV cache run by onnxruntime (`hub/onnx.py`); int8: "
              "onnxruntime's dynamic quantization of the linear layers' weights.", ""]
    return "\n".join(lines)


def _write_card(directory: ModelDir) -> None:
    card = directory.card()
    head, _, rest = card.partition(CARD_HEADING)
    tail = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
    body = head.rstrip() + "\n\n" + card_section(directory)
    if tail:
        body += "\n## " + tail
    atomic_write_text(directory.card_file, body)


def export_onnx(ref: str, out_dir: Path, store: Store | None = None, *, int8: bool = False) -> Path:
    """Version ``ref`` as an ONNX decoder with a KV cache in ``out_dir`` (fp32, or int8 weights):
    the servable variant (built into the version directory first, when it is not there yet,
    with its quality on the card) copied out with the version's config and tokenizer, so the
    directory stands alone. ``out_dir`` must not exist or be empty."""
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InvalidInput(f"{out_dir}: exists and is not an empty directory")
    store = store or Store()
    variant = "int8" if int8 else "onnx"
    make_variant(ref, variant, store)
    directory = ModelDir(Path(store.resolve(split_variant(ref)[0]).path))
    if out_dir.exists():
        out_dir.rmdir()
    with atomic_dir(out_dir) as tmp:
        for f in (directory.variant_dir(variant) / DECODER_FILE,
                  directory.variant_dir(variant) / META_FILE, directory.config_file,
                  directory.tokenizer_file):
            shutil.copyfile(f, tmp / f.name)
    return out_dir
