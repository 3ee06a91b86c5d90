"""What signing costs an image: time per image with and without its C2PA manifest.

    python -m bench.provenance [--quick] [--images 16] [--rounds 3]

In a fresh workspace (``bench/out/provenance``), untrained tiny models (the ``tiny`` preset at
32×32 RGB, 3 classes: the network's speed does not depend on its weights) of two families, the
fastest (``gan``, one forward pass) and the slowest (``diffusion``, 20 DDIM steps). Per round and
family, ``--images`` images are drawn and recorded (``ImageModel.generate``), then each image's
PNG is made three ways, timed per image:

- unsigned: the stored pixels with the ``genloop:*`` text chunks (``png_bytes``: what
  ``image_png`` did before provenance);
- signed: ``image_png`` the first time: the same PNG with its C2PA manifest signed (ES256) and
  kept (``generations/signed/``);
- signed, again: ``image_png`` once more, reading the kept PNG.

Rounds alternate; the medians are printed, with the generation time per image beside them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 images, 1 round")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    images, rounds = (4, 1) if args.quick else (args.images, args.rounds)
    root = Path(tempfile.mkdtemp(prefix="provenance-", dir=Path("bench/out").absolute()
                                 if Path("bench/out").is_dir() else None))
    os.environ["GENLOOP_HOME"] = str(root / "home")
    os.environ.pop("GENLOOP_DB_URL", None)

    import torch

    from genloop.config import settings
    from genloop.generation.image import png_bytes, read_pixels
    from genloop.generation.service import ImageModel, image_png, image_provenance, load
    from genloop.models.modeldir import ModelDir
    from genloop.models.registry import FAMILIES
    from genloop.store import Store

    torch.set_num_threads(1)
    store = Store()
    settings_steps = {"gan": {}, "diffusion": {"steps": 20}}
    models: dict[str, ImageModel] = {}
    for family in settings_steps:
        fam = FAMILIES[family]
        config = fam.make_config("tiny", image_size=32, channels=3, num_classes=3, conditional=True)
        staged = ModelDir(settings().models_dir / f".staging-{family}")
        staged.path.mkdir(parents=True)
        torch.manual_seed(0)
        staged.write_network(fam, config, fam.build(config))
        staged.write_labels(["a", "b", "c"])
        ref = store.register_model(f"bench-{family}", staged.path, family=family,
                                   dataset_hash="0" * 64).ref
        model = load(ref, store)
        assert isinstance(model, ImageModel)
        models[family] = model
    models["gan"].generate(num_samples=1, seed=0)  # warm up (and make the keys: not timed)
    image_png(models["gan"].generate(num_samples=1, seed=1).records[0], store)

    times: dict[str, dict[str, list[float]]] = {f: {"generate": [], "unsigned": [], "signed": [],
                                                    "again": []} for f in models}
    for r in range(rounds):
        for family, model in models.items():
            t0 = time.perf_counter()
            result = model.generate(num_samples=images, seed=100 + r, **settings_steps[family])
            times[family]["generate"].append((time.perf_counter() - t0) / images)
            for record in result.records:
                assert record.file is not None
                t0 = time.perf_counter()
                png_bytes(read_pixels(Path(record.file)), image_provenance(record))
                times[family]["unsigned"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                image_png(record, store)
                times[family]["signed"].append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                image_png(record, store)
                times[family]["again"].append(time.perf_counter() - t0)

    print(f"{images} images × {rounds} rounds, 32×32 RGB, 1 torch thread; ms per image (median)")
    print(f"{'family':<10} {'generate':>9} {'PNG unsigned':>13} {'PNG signed':>11} "
          f"{'signed again':>13} {'signing adds':>13}")
    for family, t in times.items():
        med = {k: statistics.median(v) * 1000 for k, v in t.items()}
        extra = med["signed"] - med["unsigned"]
        share = extra / (med["generate"] + med["unsigned"]) * 100
        print(f"{family:<10} {med['generate']:>9.2f} {med['unsigned']:>13.2f} {med['signed']:>11.2f} "
              f"{med['again']:>13.2f} {extra:>7.2f} ({share:.0f}%)")


if __name__ == "__main__":
    main()
