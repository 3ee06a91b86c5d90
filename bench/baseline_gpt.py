"""nanoGPT as it really runs on a CPU: its ``model.py`` and ``train.py`` at the small CPU setting.

    python bench/baseline_gpt.py [--max_iters 2000] [--out_dir DIR] [--key value ...]

Written from nanoGPT's source (karpathy/nanoGPT: ``model.py``, ``train.py``,
``config/train_shakespeare_char.py``, ``data/shakespeare_char/prepare.py``), not copied, to behave
as ``python train.py config/train_shakespeare_char.py --device=cpu --compile=False --eval_iters=20
--log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4 --n_embd=128
--max_iters=2000 --lr_decay_iters=2000 --dropout=0.0`` does: those are this file's defaults.
It never imports genloop: it is the reference genloop is measured against.

What it keeps of nanoGPT, on purpose:
  model   no biases (``bias=False``), exact GELU (``nn.GELU()``), dropout modules present (p=0),
          tied embedding/head weights, nanoGPT's init (N(0, 0.02), residual projections scaled
          by 1/sqrt(2·n_layer)), SDPA causal attention, fp32, no compile
  optim   ``configure_optimizers`` on CPU: AdamW over a decay group (tensors with dim ≥ 2) and a
          no-decay group, no ``fused`` (nanoGPT fuses only on CUDA), torch's default
          implementation choice on CPU (the per-tensor loop), betas (0.9, 0.99), weight decay 0.1
  lr      warmup 100 iterations, cosine to min_lr 1e-4 at lr_decay_iters, lr 1e-3
  loop    iterations 0..max_iters inclusive (max_iters + 1 optimizer steps, as train.py's
          ``if iter_num > max_iters: break``); ``estimate_loss`` (eval_iters random batches of
          train AND val) every eval_interval iterations and at 0; a checkpoint written when val
          improves (iteration > 0; always_save_checkpoint=False); the next batch fetched right
          after the forward pass; grad clip 1.0; ``loss.item()`` and the printed line every
          iteration (log_interval=1), running MFU estimate included. The GradScaler that
          train.py makes is disabled on CPU (no CUDA), so it does nothing and is left out.
  data    ``get_batch``: a uint16 memmap re-opened for every batch, ``torch.randint`` offsets,
          ``torch.stack`` of int64 slices; the split of ``prepare.py`` (first 90% train, last 10%
          val, vocabulary = the sorted set of characters), written once to ``--data_dir`` as
          train.bin / val.bin / meta.json (nanoGPT: meta.pkl; JSON here — no pickles).
What differs: the checkpoint is safetensors (model + AdamW moments) plus a JSON of the rest, not
``torch.save``'s pickle — the same order of bytes written; and the timing summary below.

Interface (stable: bench/train_speed.py, bench/time_to_quality.py run this file as a process):
  CLI     ``--name value`` or ``--name=value`` for every key of ``Config`` (nanoGPT's names):
          out_dir, data_dir, eval_interval, log_interval, eval_iters, always_save_checkpoint,
          batch_size, block_size, n_layer, n_head, n_embd, dropout, bias, learning_rate,
          max_iters, weight_decay, beta1, beta2, grad_clip, decay_lr, warmup_iters,
          lr_decay_iters, min_lr, seed; plus ``--input`` (the text; default
          $GENLOOP_DATA_MIRROR/tinyshakespeare/input.txt) and ``--quiet`` (no per-iteration line).
  writes  OUT_DIR/ckpt.safetensors + OUT_DIR/ckpt.json (the best-val checkpoint, as nanoGPT's
          ckpt.pt), and OUT_DIR/summary.json:
            config          every Config field as run
            iters           optimizer steps taken (max_iters + 1)
            tokens_per_iter batch_size × block_size
            tokens_per_s    training tokens/s over iterations after the first 20, step time only
                            (the forward, backward, clip, step and batch fetch; not evaluations,
                            checkpoints or the printed line)
            step_ms_median  median step time (same span)
            evals           [{iter, train_loss, val_loss, wall_s}] — wall_s since process start
            best_val_loss   the best estimate_loss val figure
            checkpoint      path of ckpt.safetensors (the weights to judge), or null if none
            n_params        parameters (tied weights once; nanoGPT's count includes wpe)
            startup_s       process start → first iteration; train_loop_s first → last iteration
            wall_s          process start → summary written
  import  ``GPT``, ``GPTConfig``, ``BaselineTrainer`` (one step at a time, for in-process
          benches), ``full_val_loss`` (mean CE over every non-overlapping val window),
          ``load_checkpoint``, ``prepare_data``.
"""

from __future__ import annotations

import time

T_PROCESS = time.perf_counter()  # before torch is imported: the process's start, near enough

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

# ----------------------------------------------------------------------------- model (model.py)


@dataclass
class GPTConfig:
    block_size: int = 64
    vocab_size: int = 65
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch's nn.LayerNorm always has one)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.n_head, self.n_embd, self.dropout = cfg.n_head, cfg.n_embd, cfg.dropout

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=None,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.config = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            drop=nn.Dropout(cfg.dropout),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # scaled init of the residual projections
            if name.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def get_num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx, targets=None):
        B, T = idx.size()
        assert T <= self.config.block_size, f"sequence of {T} > block size {self.config.block_size}"
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        if targets is None:  # inference: only the last position's logits
            return self.lm_head(x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas, device_type="cpu"):
        params = {n: p for n, p in self.named_parameters() if p.requires_grad}
        decay = [p for p in params.values() if p.dim() >= 2]
        nodecay = [p for p in params.values() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": weight_decay},
                  {"params": nodecay, "weight_decay": 0.0}]
        use_fused = "fused" in inspect.signature(torch.optim.AdamW).parameters and device_type == "cuda"
        extra = dict(fused=True) if use_fused else dict()
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, **extra)

    def estimate_mfu(self, fwdbwd_per_iter: int, dt: float) -> float:
        """Model FLOPs utilisation against an A100's bf16 peak (312 TFLOP/s), as nanoGPT prints."""
        cfg = self.config
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size
        flops_per_iter = (6 * self.get_num_params() + 12 * L * H * Q * T) * T * fwdbwd_per_iter
        return flops_per_iter / dt / 312e12


# ----------------------------------------------------------------------------- data


def default_input() -> Path:
    return Path(os.environ.get("GENLOOP_DATA_MIRROR", "../shared/data")) / "tinyshakespeare" / "input.txt"


def prepare_data(input_path: Path, data_dir: Path) -> dict:
    """data/shakespeare_char/prepare.py: the sorted set of characters as vocabulary, the first
    90% of the text as train.bin and the rest as val.bin (uint16). Skipped when already there."""
    meta_path = data_dir / "meta.json"
    if meta_path.exists() and (data_dir / "train.bin").exists() and (data_dir / "val.bin").exists():
        return json.loads(meta_path.read_text())
    data = Path(input_path).read_text(encoding="utf-8")
    chars = sorted(set(data))
    stoi = {ch: i for i, ch in enumerate(chars)}
    n = len(data)
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", data[: int(n * 0.9)]), ("val", data[int(n * 0.9):])):
        np.array([stoi[c] for c in part], dtype=np.uint16).tofile(data_dir / f"{name}.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars))}
    meta_path.write_text(json.dumps(meta))
    return meta


def get_batch(data_dir: Path, split: str, batch_size: int, block_size: int):
    # a fresh memmap per batch, as nanoGPT does (numpy memmaps leak memory when kept open)
    data = np.memmap(data_dir / f"{split}.bin", dtype=np.uint16, mode="r")
    ix = torch.randint(len(data) - block_size, (batch_size,))
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in ix])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in ix])
    return x, y


@torch.no_grad()
def full_val_loss(model: nn.Module, val_ids: np.ndarray, block: int, eval_batch: int = 256) -> float:
    """Mean cross-entropy over every non-overlapping window of ``block`` tokens of the split."""
    was_training = model.training
    model.eval()
    data = np.asarray(val_ids, dtype=np.int64)
    n_win = (len(data) - 1) // block
    xs = torch.from_numpy(data[: n_win * block].reshape(n_win, block))
    ys = torch.from_numpy(data[1: n_win * block + 1].reshape(n_win, block))
    total, count = 0.0, 0
    for i in range(0, n_win, eval_batch):
        x, y = xs[i:i + eval_batch], ys[i:i + eval_batch]
        logits, _ = model(x, y)
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1),
                                 reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


def load_checkpoint(path: str | Path) -> GPT:
    """The model of a checkpoint this script wrote (ckpt.safetensors beside ckpt.json)."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    model = GPT(GPTConfig(**meta["model_args"]))
    tensors = load_file(str(path))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                          strict=False)  # the tied head is stored once, as wte
    return model


# ----------------------------------------------------------------------------- training (train.py)


@dataclass
class Config:
    out_dir: str = "out-shakespeare-char"
    data_dir: str = ""  # default: OUT_DIR/../data-shakespeare-char
    eval_interval: int = 250
    log_interval: int = 1
    eval_iters: int = 20
    always_save_checkpoint: bool = False
    batch_size: int = 12
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = False
    learning_rate: float = 1e-3
    max_iters: int = 2000
    weight_decay: float = 1e-1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0
    decay_lr: bool = True
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    min_lr: float = 1e-4
    seed: int = 1337


def get_lr(it: int, c: Config) -> float:
    if not c.decay_lr:
        return c.learning_rate
    if it < c.warmup_iters:
        return c.learning_rate * (it + 1) / (c.warmup_iters + 1)
    if it > c.lr_decay_iters:
        return c.min_lr
    ratio = (it - c.warmup_iters) / (c.lr_decay_iters - c.warmup_iters)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.learning_rate - c.min_lr)


class BaselineTrainer:
    """train.py's model, optimizer, schedule and step, one step at a time, for benches that
    interleave it with something else in one process (no evaluation, checkpoints or printing)."""

    def __init__(self, data_dir: str | Path, vocab_size: int, config: Config | None = None):
        self.c = c = config or Config()
        self.data_dir = Path(data_dir)
        torch.manual_seed(c.seed)
        self.model = GPT(GPTConfig(block_size=c.block_size, vocab_size=vocab_size, n_layer=c.n_layer,
                                   n_head=c.n_head, n_embd=c.n_embd, dropout=c.dropout, bias=c.bias))
        self.optimizer = self.model.configure_optimizers(c.weight_decay, c.learning_rate,
                                                         (c.beta1, c.beta2), "cpu")
        self.it = 0
        self.X, self.Y = get_batch(self.data_dir, "train", c.batch_size, c.block_size)

    def step(self) -> torch.Tensor:
        """One iteration of train.py's loop body (without its evaluation): the step's loss."""
        c = self.c
        lr = get_lr(self.it, c)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        _, loss = self.model(self.X, self.Y)
        self.X, self.Y = get_batch(self.data_dir, "train", c.batch_size, c.block_size)  # prefetch
        loss.backward()
        if c.grad_clip != 0.0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.it += 1
        return loss

    @torch.no_grad()
    def estimate_loss(self) -> dict[str, float]:
        out = {}
        self.model.eval()
        for split in ("train", "val"):
            losses = torch.zeros(self.c.eval_iters)
            for k in range(self.c.eval_iters):
                X, Y = get_batch(self.data_dir, split, self.c.batch_size, self.c.block_size)
                _, loss = self.model(X, Y)
                losses[k] = loss.item()
            out[split] = float(losses.mean())
        self.model.train()
        return out

    def save_checkpoint(self, out_dir: Path, best_val_loss: float) -> Path:
        """ckpt.safetensors (model + AdamW moments) and ckpt.json, where nanoGPT writes ckpt.pt."""
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()
                   if k != "lm_head.weight"}  # tied to wte: stored once
        state = self.optimizer.state_dict()
        for i, s in state["state"].items():
            for k in ("exp_avg", "exp_avg_sq"):
                tensors[f"optimizer.{i}.{k}"] = s[k].contiguous()
        path = out_dir / "ckpt.safetensors"
        save_file(tensors, str(path))
        g = self.model.config
        meta = {"model_args": dataclasses.asdict(g), "iter_num": self.it, "best_val_loss": best_val_loss,
                "config": dataclasses.asdict(self.c),
                "optimizer": {"steps": {str(i): float(s["step"]) for i, s in state["state"].items()},
                              "param_groups": state["param_groups"]}}
        path.with_suffix(".json").write_text(json.dumps(meta))
        return path


def train(c: Config, input_path: Path, quiet: bool = False) -> dict:
    """train.py's loop: evaluate every eval_interval (and at 0), checkpoint on improvement,
    one optimizer step per iteration for iterations 0..max_iters, a line per log_interval."""
    out_dir = Path(c.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(c.data_dir) if c.data_dir else out_dir.parent / "data-shakespeare-char"
    meta = prepare_data(input_path, data_dir)
    tokens_per_iter = c.batch_size * c.block_size
    print(f"tokens per iteration will be: {tokens_per_iter:,}")
    trainer = BaselineTrainer(data_dir, int(meta["vocab_size"]), c)
    model = trainer.model
    print(f"number of parameters: {model.get_num_params() / 1e6:.2f}M")
    iter_num, best_val_loss, ckpt = 0, 1e9, None
    evals, step_s = [], []
    running_mfu, local_iter_num = -1.0, 0
    t_first = time.perf_counter()
    t0 = t_first
    while True:
        if iter_num % c.eval_interval == 0:
            losses = trainer.estimate_loss()
            print(f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}")
            evals.append({"iter": iter_num, "train_loss": losses["train"], "val_loss": losses["val"],
                          "wall_s": time.perf_counter() - T_PROCESS})
            if losses["val"] < best_val_loss or c.always_save_checkpoint:
                best_val_loss = losses["val"]
                if iter_num > 0:
                    print(f"saving checkpoint to {out_dir}")
                    ckpt = trainer.save_checkpoint(out_dir, best_val_loss)
        t_step = time.perf_counter()
        loss = trainer.step()
        t1 = time.perf_counter()
        if local_iter_num >= 20:
            step_s.append(t1 - t_step)
        dt, t0 = t1 - t0, t1
        if iter_num % c.log_interval == 0:
            lossf = loss.item()
            if local_iter_num >= 5:
                mfu = model.estimate_mfu(c.batch_size, dt)
                running_mfu = mfu if running_mfu == -1.0 else 0.9 * running_mfu + 0.1 * mfu
            if not quiet:
                print(f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms, "
                      f"mfu {running_mfu * 100:.2f}%")
        iter_num += 1
        local_iter_num += 1
        if iter_num > c.max_iters:
            break
    t_last = time.perf_counter()
    summary = {
        "config": dataclasses.asdict(c), "iters": iter_num, "tokens_per_iter": tokens_per_iter,
        "tokens_per_s": len(step_s) * tokens_per_iter / sum(step_s) if step_s else float("nan"),
        "step_ms_median": 1000 * statistics.median(step_s) if step_s else float("nan"),
        "evals": evals, "best_val_loss": best_val_loss,
        "checkpoint": str(ckpt) if ckpt else None,
        "n_params": sum(p.numel() for p in model.parameters()),
        "startup_s": t_first - T_PROCESS, "train_loop_s": t_last - t_first,
    }
    summary["wall_s"] = time.perf_counter() - T_PROCESS
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def parse_args(argv: list[str] | None = None) -> tuple[Config, Path, bool]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    for f in dataclasses.fields(Config):
        kind = f.type if isinstance(f.type, type) else {"int": int, "float": float, "str": str,
                                                         "bool": bool}[str(f.type)]
        if kind is bool:
            ap.add_argument(f"--{f.name}", type=lambda s: s.lower() in ("1", "true", "yes"),
                            default=f.default)
        else:
            ap.add_argument(f"--{f.name}", type=kind, default=f.default)
    ap.add_argument("--input", type=Path, default=None, help="the text (default: tinyshakespeare)")
    ap.add_argument("--quiet", action="store_true", help="no per-iteration line")
    a = vars(ap.parse_args(argv))
    input_path, quiet = a.pop("input") or default_input(), a.pop("quiet")
    return Config(**a), input_path, quiet


if __name__ == "__main__":
    cfg, text, quiet = parse_args()
    s = train(cfg, text, quiet)
    print(json.dumps({k: s[k] for k in ("iters", "tokens_per_s", "best_val_loss", "wall_s")}))
