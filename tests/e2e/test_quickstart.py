"""The README's quickstart, run as a newcomer would (fewer steps): train, register, sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from genloop.generation.image import read_provenance

from ..conftest import run_cli


@pytest.mark.slow
def test_quickstart_trains_registers_and_samples(tmp_path: Path) -> None:
    home = tmp_path / "home"
    grid = tmp_path / "digits.png"
    proc = run_cli(["quickstart", "--steps", "40", "--image-steps", "30", "--grid", str(grid)], home,
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "python-docs@1" in proc.stdout
    assert "genloop generate python-docs@1" in proc.stdout  # the next commands to try
    version = home / "models" / "python-docs" / "1"
    for name in ("weights.safetensors", "config.json", "tokenizer.json", "card.md", "lineage.json"):
        assert (version / name).is_file(), name
    card = (version / "card.md").read_text()
    assert "bits per character" in card and "python-docs" in card
    again = run_cli(["generate", "python-docs", "--prompt", "The ", "--seed", "1",
                     "--max-new-tokens", "20", "--no-stream", "--json"], home)
    assert again.returncode == 0, again.stderr
    assert '"model": "python-docs@1"' in again.stdout
    # the image half: a digit generator, registered with its evaluation, and a grid of 4 × 10
    assert "digits@1" in proc.stdout and "genloop generate digits@1" in proc.stdout
    digits = home / "models" / "digits" / "1"
    assert "FID" in (digits / "card.md").read_text()
    assert read_provenance(grid)["model"] == "digits@1"
    with Image.open(grid) as img:
        assert img.width > img.height  # 10 columns (one per digit), 4 rows
