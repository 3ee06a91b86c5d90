"""A genloop ``gpt`` → a transformers directory that ``AutoModelForCausalLM.from_pretrained`` loads.

    OUT_DIR/
        config.json              GPT2Config (model_type gpt2, GPT2LMHeadModel)
        model.safetensors        the mapped weights
        generation_config.json   eos/bos/pad = <eos>, the context as max_length, sampling defaults
        tokenizer.json           a `tokenizers` JSON that encodes exactly as genloop's tokenizer
        tokenizer_config.json    PreTrainedTokenizerFast, <unk>/<eos> as unk/eos/bos/pad
        special_tokens_map.json  the same special tokens, for older readers
        chat_template.jinja      when a template is given (genloop's, rendered as jinja)
        README.md                the model card, with what the export was made from

Why the GPT-2 layout and not Llama's: gpt has learned absolute positions (``wpe``), LayerNorm
(no RMSNorm) and a GELU MLP (no gated SiLU), which is GPT-2's architecture exactly; Llama's
rotary positions, RMSNorm and SwiGLU would compute something else. The mapping:

    wte, wpe                  → transformer.wte, transformer.wpe
    blocks.i.ln_1/ln_2, ln_f  → the same names (weight; genloop's LayerNorms have no bias: 0)
    blocks.i.attn.qkv         → h.i.attn.c_attn  (GPT-2's Conv1D stores (in, out): transposed;
                                 q, k, v in the same order; bias 0)
    blocks.i.attn.proj        → h.i.attn.c_proj  (transposed, bias 0)
    blocks.i.mlp.fc / proj    → h.i.mlp.c_fc / c_proj  (transposed, bias 0)
    head                      → lm_head (tied to wte unless the model was trained untied)

The activation is ``gelu_pytorch_tanh`` (``F.gelu(approximate="tanh")``, what gpt computes;
GPT-2's ``gelu_new`` is the same formula written out, equal within float rounding). The exported
logits are checked against genloop's on a probe batch before anything is written; the directory
is written in a temporary directory beside ``OUT_DIR`` and renamed into place in one step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from genloop.atomic import atomic_dir
from genloop.errors import CorruptArtifact, InvalidInput
from genloop.hub.adapters import base_dirs
from genloop.models.gpt import GPT, GPTConfig, modern_options
from genloop.models.modeldir import ModelDir
from genloop.store import ModelVersion, Store
from genloop.tokenizers import EOS, UNK, Tokenizer

EXPORTABLE = ("gpt",)
PROBE_TOLERANCE = 1e-4  # the export refuses to write weights whose logits differ more than this
LICENSE_NOTE = "the license of the data it was trained on applies"


def export_hf(ref: str, out_dir: str | os.PathLike[str], store: Store | None = None, *,
              chat_template: str | None = None,
              sampling: dict[str, Any] | None = None) -> Path:
    """Write version ``ref`` (a ``gpt``) to ``out_dir`` as a transformers GPT-2 directory.

    ``chat_template``: a jinja chat template to ship (``chat_template.jinja`` and in
    tokenizer_config.json); ``sampling``: generation defaults (``do_sample``, ``temperature``,
    ``top_k``, ``top_p``, ``repetition_penalty``) for generation_config.json.
    ``out_dir`` must not exist or be an empty directory. Returns ``out_dir``."""
    out = Path(out_dir)
    _check_out_dir(out)
    store = store or Store()
    version = store.resolve(ref)
    if version.family not in EXPORTABLE:
        raise InvalidInput(f"{version.ref} is a {version.family!r} model; export --format hf takes "
                           f"{' or '.join(EXPORTABLE)} models")
    directory = ModelDir(Path(version.path))
    _, config, network = directory.load(base=base_dirs(store), merged=True)  # an adapter: folded in
    assert isinstance(network, GPT) and isinstance(config, GPTConfig)  # the family, checked above
    tokenizer = directory.tokenizer()
    if tokenizer is None:
        raise CorruptArtifact(f"{directory.tokenizer_file}: {version.ref} has no tokenizer")
    hf_model = to_transformers(network, tokenizer.eos_id)
    hf_model.generation_config = _generation_config(config.block_size, tokenizer, sampling)
    check_logits(network, hf_model)
    with atomic_dir(out) as tmp:
        _quietly(hf_model.save_pretrained, tmp)
        write_tokenizer(tokenizer, tmp, config.block_size, chat_template)
        (tmp / "README.md").write_text(model_card(version, directory, tokenizer), encoding="utf-8")
        _fsync_files(tmp)
    return out


# --- the network --------------------------------------------------------------------------------


def gpt2_config(config: GPTConfig, eos_id: int = 1) -> Any:
    """The GPT2Config of a gpt config; ``eos_id``: the end of text, also its bos and pad."""
    from transformers import GPT2Config

    if odd := modern_options(config):  # GPT-2's layout: learned positions, plain attention, GELU
        raise InvalidInput(f"export --format hf (GPT-2) does not support the gpt option {odd[0]}: "
                           "export a model trained without it")
    return GPT2Config(
        vocab_size=config.vocab_size, n_positions=config.block_size, n_embd=config.n_embd,
        n_layer=config.n_layer, n_head=config.n_head, n_inner=4 * config.n_embd,
        activation_function="gelu_pytorch_tanh", resid_pdrop=config.dropout,
        embd_pdrop=config.dropout, attn_pdrop=config.dropout, layer_norm_epsilon=1e-5,
        tie_word_embeddings=config.tie_weights, bos_token_id=eos_id, eos_token_id=eos_id,
        pad_token_id=eos_id,
        architectures=["GPT2LMHeadModel"],
    )


def gpt2_state(network: GPT) -> dict[str, torch.Tensor]:
    """genloop gpt weights under GPT-2's names (Conv1D weights transposed, zero biases)."""
    own = {k: v.detach().float().cpu() for k, v in network.state_dict().items()}
    n_layer = network.config.n_layer
    zeros = torch.zeros
    out: dict[str, torch.Tensor] = {
        "transformer.wte.weight": own["wte.weight"],
        "transformer.wpe.weight": own["wpe.weight"],
        "transformer.ln_f.weight": own["ln_f.weight"],
        "transformer.ln_f.bias": zeros(own["ln_f.weight"].shape),
        "lm_head.weight": own["head.weight"],
    }
    for i in range(n_layer):
        g, h = f"blocks.{i}.", f"transformer.h.{i}."
        for ln in ("ln_1", "ln_2"):
            out[h + f"{ln}.weight"] = own[g + f"{ln}.weight"]
            out[h + f"{ln}.bias"] = zeros(own[g + f"{ln}.weight"].shape)
        for src, dst in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                         ("mlp.fc", "mlp.c_fc"), ("mlp.proj", "mlp.c_proj")):
            weight = own[g + f"{src}.weight"]  # nn.Linear: (out, in); Conv1D: (in, out)
            out[h + f"{dst}.weight"] = weight.t().contiguous()
            out[h + f"{dst}.bias"] = zeros(weight.shape[0])
    return out


def to_transformers(network: GPT, eos_id: int = 1) -> Any:
    """A GPT2LMHeadModel (eval mode, fp32) computing what the gpt ``network`` computes."""
    from transformers import GPT2LMHeadModel

    config = network.config
    model = GPT2LMHeadModel(gpt2_config(config, eos_id))
    state = gpt2_state(network)
    expected = set(model.state_dict())
    if set(state) != expected:  # a transformers release that renamed GPT-2's parameters
        odd = sorted(set(state) ^ expected)[0]
        raise CorruptArtifact(f"transformers' GPT-2 layout does not match the export's ({odd!r})")
    model.load_state_dict(state, strict=True)
    if config.tie_weights:
        model.tie_weights()
    return model.eval()


@torch.no_grad()
def check_logits(network: GPT, hf_model: Any, tolerance: float = PROBE_TOLERANCE) -> float:
    """The largest |logit difference| on a probe batch (two rows, the whole context); refuses
    an export beyond ``tolerance`` (a mapping bug, never a user's mistake)."""
    cfg = network.config
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (2, cfg.block_size), generator=gen)
    was_training = network.training
    network.eval()
    try:
        ours = network(ids).float()
    finally:
        network.train(was_training)
    theirs = hf_model(input_ids=ids).logits
    diff = float((ours - theirs).abs().max())
    if not diff <= tolerance:
        raise CorruptArtifact(f"the exported model's logits differ from genloop's by {diff:.3g} "
                              f"(more than {tolerance:g}); nothing written")
    return diff


def _generation_config(block_size: int, tokenizer: Tokenizer, sampling: dict[str, Any] | None) -> Any:
    from transformers import GenerationConfig

    eos = tokenizer.eos_id
    settings: dict[str, Any] = {k: v for k, v in (sampling or {}).items() if v is not None}
    if settings.get("temperature") == 0:  # genloop's 0 is greedy; transformers spells it so
        settings.pop("temperature")
        settings["do_sample"] = False
    # learned positions: a GPT-2 cannot read past its context (genloop slides a window instead)
    return GenerationConfig(bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
                            max_length=block_size, **settings)


# --- the tokenizer ------------------------------------------------------------------------------


def hf_tokenizer_json(tokenizer: Tokenizer) -> dict[str, Any]:
    """A `tokenizers` JSON that encodes every text exactly as ``tokenizer`` (char or bpe) does,
    with ``<unk>`` and ``<eos>`` as special tokens at ids 0 and 1."""
    if tokenizer.kind == "bpe":  # already Hugging Face's own tokenizer JSON inside genloop's
        return dict(json.loads(tokenizer.to_json())["tokenizer"])
    if tokenizer.kind != "char":
        raise InvalidInput(f"a {tokenizer.kind!r} tokenizer cannot be exported; char and bpe can")
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    vocab = json.loads(tokenizer.to_json())["vocab"]  # [<unk>, <eos>, sorted characters...]
    hf = HFTokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(vocab)}, unk_token=UNK))
    # one piece per code point, newlines included; unknown characters become <unk>, as genloop's
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    hf.decoder = decoders.Fuse()  # pieces join with nothing between them
    hf.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (UNK, EOS)])
    return dict(json.loads(hf.to_str()))


def tokenizer_config(block_size: int, chat_template: str | None) -> dict[str, Any]:
    """tokenizer_config.json: the fast tokenizer class every transformers release knows, genloop's
    special tokens, and ``split_special_tokens``: text that spells "<eos>" is ordinary text in
    genloop (prompts cannot inject an end of text), so it is split here too."""
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": block_size,
        "unk_token": UNK, "eos_token": EOS, "bos_token": EOS, "pad_token": EOS,
        "split_special_tokens": True, "clean_up_tokenization_spaces": False,
        "add_bos_token": False, "add_eos_token": False,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    return config


def write_tokenizer(tokenizer: Tokenizer, directory: Path, block_size: int,
                    chat_template: str | None) -> None:
    if (tokenizer.unk_id, tokenizer.eos_id) != (0, 1):
        raise CorruptArtifact(f"the tokenizer's <unk>/<eos> ids are {tokenizer.unk_id}/"
                              f"{tokenizer.eos_id}, not 0/1")
    _dump(directory / "tokenizer.json", hf_tokenizer_json(tokenizer))
    _dump(directory / "tokenizer_config.json", tokenizer_config(block_size, chat_template))
    _dump(directory / "special_tokens_map.json",
          {"unk_token": UNK, "eos_token": EOS, "bos_token": EOS, "pad_token": EOS})
    if chat_template is not None:
        (directory / "chat_template.jinja").write_text(chat_template, encoding="utf-8")


# --- the card -----------------------------------------------------------------------------------


def model_card(version: ModelVersion, directory: ModelDir, tokenizer: Tokenizer) -> str:
    """README.md: Hugging Face's metadata header, where the export came from, then genloop's card."""
    lineage = directory.lineage() if directory.lineage_file.is_file() else {}
    header = "\n".join(["---", "library_name: transformers", "pipeline_tag: text-generation",
                        "tags:", "- genloop", "- gpt2", "---", ""])
    facts = [f"- exported from genloop `{version.ref}` (family `gpt`, GPT-2 layout)",
             f"- tokenizer: genloop's `{tokenizer.kind}` tokenizer as a `tokenizers` JSON "
             f"({tokenizer.vocab_size} tokens; `{UNK}` = 0, `{EOS}` = 1, the end of text)"]
    for key in ("dataset_hash", "recipe_hash", "parent", "run_id"):
        if lineage.get(key):
            facts.append(f"- {key.replace('_', ' ')}: `{lineage[key]}`")
    facts.append(f"- license: {LICENSE_NOTE}")
    usage = ("```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
             "tok = AutoTokenizer.from_pretrained(PATH)\n"
             "model = AutoModelForCausalLM.from_pretrained(PATH)\n"
             "ids = tok(\"ROMEO:\", return_tensors=\"pt\").input_ids\n"
             "print(tok.decode(model.generate(ids, max_new_tokens=50)[0], skip_special_tokens=True))\n"
             "```\n")
    card = directory.card().strip()
    return (header + f"\n# {version.name} (genloop export)\n\n" + "\n".join(facts) + "\n\n"
            + usage + ("\n## genloop model card\n\n" + card + "\n" if card else ""))


# --- files --------------------------------------------------------------------------------------


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"{out} exists and is not a directory; give a new directory")
    if out.is_dir() and any(out.iterdir()):
        raise InvalidInput(f"{out} exists and is not empty; give a new or empty directory")


def _quietly(fn: Any, *args: Any) -> Any:
    """Call a transformers writer without its progress bar (library code never prints)."""
    from transformers.utils import logging as hf_logging

    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return fn(*args)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _fsync_files(directory: Path) -> None:
    """Flush every file the export wrote (transformers' writers do not fsync) before the rename."""
    for path in directory.iterdir():
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
