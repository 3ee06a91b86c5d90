"""bench/baseline_gpt.py as other benches run it: its own process, its CLI, summary.json, checkpoint."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_the_baseline_runs_as_a_process_and_writes_its_summary_and_checkpoint(tmp_path):
    text = tmp_path / "input.txt"
    text.write_text("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 40)
    out = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "bench" / "baseline_gpt.py"), "--input", str(text),
           "--out_dir", str(out), "--data_dir", str(tmp_path / "data"), "--max_iters", "6",
           "--lr_decay_iters", "6", "--warmup_iters", "2", "--eval_interval", "3", "--eval_iters", "2",
           "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "8", "--batch_size", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "iter 6: loss" in proc.stdout and "step 3: train loss" in proc.stdout
    s = json.loads((out / "summary.json").read_text())
    assert s["iters"] == 7  # iterations 0..max_iters, as nanoGPT's train.py
    assert [e["iter"] for e in s["evals"]] == [0, 3, 6]
    assert s["tokens_per_iter"] == 16 and s["config"]["bias"] is False
    assert all(e["wall_s"] > 0 for e in s["evals"])
    sys.path.insert(0, str(ROOT))
    from bench.baseline_gpt import full_val_loss, load_checkpoint

    model = load_checkpoint(s["checkpoint"])
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied after loading
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    val = np.fromfile(tmp_path / "data" / "val.bin", dtype=np.uint16).astype(np.int64)
    loss = full_val_loss(model, val, 8)
    assert 0 < loss < float(torch.log(torch.tensor(float(model.config.vocab_size)))) + 1
