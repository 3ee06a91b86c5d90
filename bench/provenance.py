"""What signing costs: a text generation's record sealed as it is made, and an image's PNG.

    python -m bench.provenance [--quick] [--images 16] [--rounds 3] [--texts 200] [--part all|text|images]

Text (the hot path: every generation, every HTTP choice, is sealed as it is recorded): an untrained
tiny GPT over a character tokenizer, ``--texts`` calls of ``TextModel.generate`` (one prompt, one
sample, 8 new tokens) with the record sealed (ES256 over its claims, kept in its row) and without
(``record_signer`` swapped for None), interleaved call by call; the medians as generations per
second and the time the seal adds per record, beside the seal alone
(``record_signer(version)(record)``: claims, request hash, ECDSA) timed on its own. Images: the
same with and without the seal, per image drawn.

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
Signing an image's C2PA manifest as it is drawn would add the "PNG signed" column to every image
drawn (the Python API and the CLI's grid never hand out each image's PNG), so that PNG is made
when first handed out, from a record checked against the seal made with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 images, 1 round")
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--texts", type=int, default=200, help="text generations per round and mode")
    p.add_argument("--part", choices=["all", "text", "images"], default="all")
    args = p.parse_args()
    images, rounds = (4, 1) if args.quick else (args.images, args.rounds)
    texts = 50 if args.quick else args.texts
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
    text = bench_text(store, texts, max(rounds, 2)) if args.part in ("all", "text") else None
    if args.part == "text":
        return
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
                                                    "again": [], "unsealed": []} for f in models}
    for r in range(rounds):
        for family, model in models.items():
            with unsealed():  # other seeds: pixels not stored yet, as the sealed ones' below
                t0 = time.perf_counter()
                model.generate(num_samples=images, seed=500 + r, **settings_steps[family])
                times[family]["unsealed"].append((time.perf_counter() - t0) / images)
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
    rows, figures = [], {}
    print(f"{'family':<10} {'unsealed':>9} {'generate':>9} {'PNG unsigned':>13} {'PNG signed':>11} "
          f"{'signed again':>13} {'signing adds':>13}")
    for family, t in times.items():
        med = {k: statistics.median(v) * 1000 for k, v in t.items()}
        extra = med["signed"] - med["unsigned"]
        share = extra / (med["generate"] + med["unsigned"]) * 100
        print(f"{family:<10} {med['unsealed']:>9.2f} {med['generate']:>9.2f} {med['unsigned']:>13.2f} "
              f"{med['signed']:>11.2f} {med['again']:>13.2f} {extra:>7.2f} ({share:.0f}%)")
        figures[family] = {**{f"{k}_ms": v for k, v in med.items()}, "signing_adds_ms": extra,
                           "signing_share": share / 100}
        rows.append([family, f"{med['unsealed']:.2f}", f"{med['generate']:.2f}",
                     f"{med['unsigned']:.2f}", f"{med['signed']:.2f}", f"{med['again']:.2f}",
                     f"{extra:.2f} ({share:.0f}%)"])
    if text is None or args.quick:
        return
    from bench.common import save, table

    save("provenance", {"text": text, "images": figures}, "\n".join([
        "## Provenance: what signing costs",
        "",
        f"Text: {texts} generations × {max(rounds, 2)} rounds through `TextModel.generate` "
        "(untrained tiny gpt, 8 new tokens, 1 torch thread, SQLite), sealed and unsealed calls "
        "interleaved; medians.",
        "",
        table(["", "generations/s", "ms each"],
              [["unsealed", f"{1 / text['unsealed_s']:.1f}", f"{text['unsealed_s'] * 1000:.3f}"],
               ["sealed (ES256 record, same transaction)", f"{1 / text['sealed_s']:.1f}",
                f"{text['sealed_s'] * 1000:.3f}"]]),
        "",
        f"The seal adds {text['adds_ms']:+.3f} ms per record; the seal alone (claims, request "
        f"hash, ES256) takes {text['seal_us']:.1f} µs.",
        "",
        f"Images: {images} images × {rounds} rounds, 32×32 RGB, untrained tiny models, 1 torch "
        "thread; ms per image (median). \"PNG signed\" is the first hand-out (C2PA manifest "
        "signed and kept), \"again\" a later one (the kept PNG read).",
        "",
        table(["family", "generate, unsealed", "generate, sealed", "PNG unsigned", "PNG signed",
               "PNG again", "C2PA signing adds"], rows),
        "",
    ]))


@contextmanager
def unsealed() -> Iterator[None]:
    """Generations recorded without their seal (what genloop did before generation-time signing)."""
    from genloop.generation import service

    sealing = service.record_signer
    service.record_signer = lambda version: None  # type: ignore[assignment,return-value]
    try:
        yield
    finally:
        service.record_signer = sealing


def bench_text(store: Any, texts: int, rounds: int) -> dict[str, float]:
    """Generations per second through ``TextModel.generate`` with and without the seal."""
    import torch

    from genloop.config import settings
    from genloop.generation.provenance import record_signer
    from genloop.generation.service import TextModel, load
    from genloop.models.modeldir import ModelDir
    from genloop.models.registry import get_family
    from genloop.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["the quick brown fox jumps over the lazy dog."])
    family = get_family("gpt")
    config = family.make_config("tiny", vocab_size=tok.vocab_size, block_size=32)
    staged = ModelDir(settings().models_dir / ".staging-text")
    staged.path.mkdir(parents=True)
    torch.manual_seed(0)
    staged.write_network(family, config, family.build(config))
    staged.write_tokenizer(tok)
    ref = store.register_model("bench-text", staged.path, family="gpt", dataset_hash="0" * 64).ref
    model = load(ref, store)
    assert isinstance(model, TextModel)

    def once(seed: int) -> float:
        t0 = time.perf_counter()
        model.generate("the ", max_new_tokens=8, seed=seed)
        return time.perf_counter() - t0

    for i in range(10):  # warm up (and make the keys: not timed)
        once(i)
    # sealed and unsealed calls interleaved one by one, so a busy machine slows both alike
    per: dict[str, list[float]] = {"sealed": [], "unsealed": []}
    for r in range(rounds):
        for i in range(texts):
            with unsealed():
                per["unsealed"].append(once(10_000 * r + 2 * i))
            per["sealed"].append(once(10_000 * r + 2 * i + 1))
    record = store.list_generations(ref, limit=1)[0]
    sign = record_signer(model.version)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        sign(record)
    seal = (time.perf_counter() - t0) / n
    sealed, plain = statistics.median(per["sealed"]), statistics.median(per["unsealed"])
    print(f"text: {texts} generations × {rounds} rounds, tiny gpt, 8 new tokens, 1 torch thread, "
          "SQLite (median)")
    print(f"  unsealed {1 / plain:8.1f} generations/s ({plain * 1000:.3f} ms each)")
    print(f"  sealed   {1 / sealed:8.1f} generations/s ({sealed * 1000:.3f} ms each): "
          f"{(sealed - plain) * 1000:+.3f} ms per record")
    print(f"  the seal alone (claims, request hash, ES256): {seal * 1e6:.1f} µs per record")
    return {"sealed_s": sealed, "unsealed_s": plain, "adds_ms": (sealed - plain) * 1000,
            "seal_us": seal * 1e6}


if __name__ == "__main__":
    main()
