"""The real `genloop` command on images: prepare a folder of images, train a tiny generator,
generate a grid with provenance, evaluate; bad image input fails with one line and leaves nothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from genloop.generation.image import read_provenance

from ..conftest import run_cli, tiny_image_recipe_dict  # noqa: TID252


@pytest.mark.slow
def test_train_generate_eval_through_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    recipe = tmp_path / "digits.yaml"
    recipe.write_text(yaml.safe_dump(tiny_image_recipe_dict("vae", name="cli-vae", steps=20)))
    r = run_cli(["train", str(recipe)], home)
    assert r.returncode == 0, r.stderr
    assert "cli-vae@1" in r.stdout and "fid" in r.stdout and "img/s" in r.stderr

    grid = tmp_path / "fours.png"
    r = run_cli(["generate", "cli-vae", "-n", "6", "--class", "4", "--seed", "9", "--out", str(grid),
                 "--json"], home)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(records) == 6 and all(x["class"] == "4" for x in records)
    assert [x["seed"] for x in records] == list(range(9, 15))  # image i: seed + i, as text
    assert all(Path(x["file"]).is_file() for x in records)
    stamp = read_provenance(grid)
    assert stamp["model"] == "cli-vae@1" and stamp["request"]["class_label"] == "4"
    assert stamp["seed"] == 9 and stamp["seeds"] == list(range(9, 15))
    assert stamp["content_hashes"] == [x["content_hash"] for x in records]

    r = run_cli(["eval", "cli-vae", "--samples", "30", "--importance-samples", "3"], home)
    assert r.returncode == 0, r.stderr
    assert "fid" in r.stdout and "test_iw_nll_nats" in r.stdout

    (tmp_path / "held.txt").write_text("some text")
    r = run_cli(["eval", "cli-vae", "--data", str(tmp_path / "held.txt")], home)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "image model" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1

    r = run_cli(["generate", "cli-vae", "--class", "ten"], home)
    assert r.returncode != 0 and r.stderr.startswith("error:") and "not a class" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_data_prepare_images_and_bad_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = tmp_path / "pics"
    for label in ("cats", "dogs"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            pixels = np.full((16, 16, 3), 40 * i + (100 if label == "dogs" else 0), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / label / f"{i}.png")
    r = run_cli(["data", "prepare", str(folder)], home)
    assert r.returncode == 0, r.stderr
    r = run_cli(["data", "list"], home)
    assert "pics" in r.stdout and "images" in r.stdout

    (folder / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    r = run_cli(["data", "prepare", str(folder), "--name", "broken"], home)
    last = r.stderr.strip().splitlines()[-1]  # after the progress lines, one error line
    assert r.returncode != 0 and last.startswith("error:") and "broken.png" in last and "_io" not in last
    assert not (home / "datasets" / "broken").exists() or not any((home / "datasets" / "broken").iterdir())
