"""Plain nanoGPT-style char-level GPT baseline (fp32 eager, no dropout).

Mirrors karpathy/nanoGPT model.py (minus dropout) and the shakespeare_char
training recipe: AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on 2D
params, linear warmup 100 steps, cosine decay to 1e-4, grad clip 1.0.
This module must not import genloop: it is the reference the benchmark
compares against.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    vocab_size: int = 65
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    bias: bool = True


class LayerNorm(nn.Module):
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
        self.n_head = cfg.n_head
        self.n_embd = cfg.n_embd

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(cfg.n_embd, cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = LayerNorm(cfg.n_embd, cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
            ln_f=LayerNorm(cfg.n_embd, cfg.bias),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for pn, p in self.named_parameters():
            if pn.endswith("c_proj.weight"):
                torch.nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

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
        pos = torch.arange(0, T, dtype=torch.long, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def configure_optimizers(self, weight_decay, learning_rate, betas):
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        nodecay = [p for p in params if p.dim() < 2]
        groups = [
            {"params": decay, "weight_decay": weight_decay},
            {"params": nodecay, "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=learning_rate, betas=betas)


# ----------------------------------------------------------------------------- data

def load_char_dataset(path: str | None = None):
    path = path or os.path.join(os.environ.get("GENLOOP_DATA_MIRROR", "../shared/data"),
                                "tinyshakespeare", "input.txt")
    """First 90% of chars -> train, last 10% -> val; char-level vocab."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = np.array([stoi[c] for c in text], dtype=np.int64)
    n = int(0.9 * len(ids))
    return ids[:n], ids[n:], len(chars)


def get_batch(data: np.ndarray, batch: int, block: int, rng: np.random.Generator):
    ix = rng.integers(0, len(data) - block - 1, size=batch)
    x = torch.from_numpy(np.stack([data[i:i + block] for i in ix]).astype(np.int64))
    y = torch.from_numpy(np.stack([data[i + 1:i + 1 + block] for i in ix]).astype(np.int64))
    return x, y


@torch.no_grad()
def full_val_loss(model: nn.Module, val_ids: np.ndarray, block: int, eval_batch: int = 256) -> float:
    """Mean CE over all non-overlapping windows of `block` tokens in val."""
    was_training = model.training
    model.eval()
    n_win = (len(val_ids) - 1) // block
    data = np.asarray(val_ids, dtype=np.int64)
    xs = torch.from_numpy(data[: n_win * block].reshape(n_win, block))
    ys = torch.from_numpy(data[1: n_win * block + 1].reshape(n_win, block))
    total, count = 0.0, 0
    for i in range(0, n_win, eval_batch):
        x, y = xs[i:i + eval_batch], ys[i:i + eval_batch]
        logits, _ = model(x)
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1),
                                 reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count


def get_lr(it: int, lr: float, min_lr: float, warmup: int, decay_iters: int) -> float:
    if it < warmup:
        return lr * (it + 1) / (warmup + 1)
    if it > decay_iters:
        return min_lr
    ratio = (it - warmup) / (decay_iters - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
    return min_lr + coeff * (lr - min_lr)


# ----------------------------------------------------------------------------- train

class BaselineTrainer:
    """The baseline's training loop, one step at a time (so a benchmark can interleave it)."""

    def __init__(self, train_ids: np.ndarray, vocab_size: int, steps: int = 2000, batch: int = 12,
                 block: int = 64, lr: float = 1e-3, seed: int = 0, n_layer: int = 4,
                 n_head: int = 4, n_embd: int = 128, min_lr: float = 1e-4, warmup: int = 100,
                 weight_decay: float = 0.1, betas=(0.9, 0.99), grad_clip: float = 1.0):
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        self.train_ids, self.batch, self.block = train_ids, batch, block
        self.steps, self.lr, self.min_lr, self.warmup, self.grad_clip = steps, lr, min_lr, warmup, grad_clip
        cfg = GPTConfig(vocab_size=vocab_size, block_size=block, n_layer=n_layer, n_head=n_head,
                        n_embd=n_embd, bias=True)
        self.model = GPT(cfg)
        self.model.train()
        self.opt = self.model.configure_optimizers(weight_decay, lr, betas)
        self.it = 0
        self.loss = float("nan")

    def step(self) -> None:
        cur_lr = get_lr(self.it, self.lr, self.min_lr, self.warmup, self.steps)
        for g in self.opt.param_groups:
            g["lr"] = cur_lr
        x, y = get_batch(self.train_ids, self.batch, self.block, self.rng)
        _, loss = self.model(x, y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.opt.step()
        self.it += 1
        self.loss = float(loss.item())


def train_baseline(train_ids: np.ndarray, val_ids: np.ndarray, vocab_size: int, steps: int = 2000,
                   warmup_steps_excluded: int = 20, eval_batch: int = 256, **kwargs) -> dict:
    """Train the baseline; returns tokens/s (excluding first warmup steps), val loss, wall time."""
    trainer = BaselineTrainer(train_ids, vocab_size, steps=steps, **kwargs)
    t_start = time.perf_counter()
    t_timed = None
    for it in range(steps):
        if it == warmup_steps_excluded:
            t_timed = time.perf_counter()
        trainer.step()
    t_end = time.perf_counter()
    timed_steps = steps - warmup_steps_excluded
    tokens = timed_steps * trainer.batch * trainer.block
    tps = tokens / (t_end - t_timed) if (t_timed and timed_steps > 0) else float("nan")
    val = full_val_loss(trainer.model, val_ids, trainer.block, eval_batch)
    return {
        "tokens_per_s": tps,
        "val_loss": val,
        "train_loss": trainer.loss,
        "wall_s": time.perf_counter() - t_start,
        "train_s": t_end - t_start,
        "steps": steps,
        "n_params": sum(p.numel() for p in trainer.model.parameters()),
    }


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    a = ap.parse_args()
    tr, va, V = load_char_dataset()
    print(train_baseline(tr, va, V, steps=a.steps))
