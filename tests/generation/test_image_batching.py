"""Image batching: concurrent requests to one image model share sampling runs, and each image is
still the one its seed draws alone (``generation/image_batching.py``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from genloop.errors import GenloopError
from genloop.generation.batching import Busy
from genloop.generation.image import ImageGenRequest, generate_images, prepare_images
from genloop.generation.image_batching import ImageBatcher
from genloop.models.registry import FAMILIES
from genloop.tokenizers import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["zero", "one", "two"]


def _model(family: str, **overrides):
    fam = FAMILIES[family]
    config = fam.make_config("tiny", image_size=8, channels=1, num_classes=3, **overrides)
    torch.manual_seed(0)
    return fam, config, fam.build(config).eval()


def _draw(fam, config, **params):
    return prepare_images(fam, config, CLASSES, ImageGenRequest(**params))


def _alone(fam, config, net, **params) -> np.ndarray:
    return generate_images(fam, config, net, CLASSES, ImageGenRequest(**params)).images


def _submit_together(batcher: ImageBatcher, draws):
    """Submit every draw while the loop still waits out its window, so they share a run."""
    return [batcher.submit(d) for d in draws]


@pytest.mark.parametrize("family,settings", [
    ("diffusion", {"steps": 4}), ("diffusion", {"steps": 4, "sampler": "ddpm"}),
    ("diffusion", {"steps": 4, "sampler": "dpmpp_2m", "guidance_scale": 3.0}),
    ("gan", {}), ("vae", {}),
])
def test_requests_sent_together_share_one_run_and_draw_their_own_images(family, settings):
    fam, config, net = _model(family, conditional=True)
    asks = [dict(num_samples=1, seed=7, class_label="one"), dict(num_samples=2, seed=40),
            dict(num_samples=1, seed=7, class_label="two")]
    batcher = ImageBatcher(fam, net, max_batch=16, window_s=0.3)
    try:
        tickets = _submit_together(batcher, [_draw(fam, config, **a, **settings) for a in asks])
        outs = [t.result(60) for t in tickets]
    finally:
        batcher.close()
    assert batcher.stats.runs == 1 and batcher.stats.largest == 4  # one U-Net run for all four
    for ask, out in zip(asks, outs, strict=True):
        assert np.array_equal(out.images, _alone(fam, config, net, **ask, **settings))
        assert out.timings["batch_images"] == 4
    assert outs[0].labels == [1] and outs[1].labels == [0, 1] and outs[2].labels == [2]
    assert not np.array_equal(outs[0].images, outs[2].images)  # the class still matters


def test_different_settings_run_apart_in_arrival_order():
    fam, config, net = _model("diffusion", conditional=True)
    asks = [dict(num_samples=1, seed=1, steps=3), dict(num_samples=1, seed=2, steps=5),
            dict(num_samples=1, seed=3, steps=3), dict(num_samples=1, seed=4, steps=3,
                                                         guidance_scale=1.0)]
    batcher = ImageBatcher(fam, net, window_s=0.3)
    try:
        outs = [t.result(60) for t in _submit_together(batcher, [_draw(fam, config, **a) for a in asks])]
    finally:
        batcher.close()
    assert batcher.stats.sizes == [2, 1, 1]  # steps 3 (seeds 1 and 3), steps 5, guidance 1
    for ask, out in zip(asks, outs, strict=True):
        assert np.array_equal(out.images, _alone(fam, config, net, **ask))


def test_a_run_holds_at_most_max_batch_images():
    fam, config, net = _model("diffusion", conditional=True)
    asks = [dict(num_samples=2, seed=s, steps=2) for s in (10, 20, 30)]
    batcher = ImageBatcher(fam, net, max_batch=4, window_s=0.3)
    try:
        outs = [t.result(60) for t in _submit_together(batcher, [_draw(fam, config, **a) for a in asks])]
    finally:
        batcher.close()
    assert batcher.stats.sizes == [4, 2]
    for ask, out in zip(asks, outs, strict=True):
        assert np.array_equal(out.images, _alone(fam, config, net, **ask))


def test_an_interpolation_runs_alone():
    fam, config, net = _model("vae", conditional=False)
    walk = dict(num_samples=3, seed=5, interpolate=True)
    batcher = ImageBatcher(fam, net, window_s=0.3)
    try:
        tickets = _submit_together(batcher, [_draw(fam, config, **walk),
                                             _draw(fam, config, num_samples=2, seed=6)])
        outs = [t.result(60) for t in tickets]
    finally:
        batcher.close()
    assert batcher.stats.sizes == [3, 2]
    assert np.array_equal(outs[0].images, _alone(fam, config, net, **walk))


def test_text_diffusion_prompts_of_one_width_share_a_run():
    fam = FAMILIES["text-diffusion"]
    tok = CharTokenizer.train("a red circle blue square top left")
    config = fam.make_config("tiny", image_size=8, channels=1, vocab_size=tok.vocab_size)
    torch.manual_seed(0)
    net = fam.build(config).eval()
    asks = [dict(num_samples=1, seed=3, prompt="red circle", steps=3),
            dict(num_samples=2, seed=9, prompt="blue squar", steps=3),  # as wide: one run
            dict(num_samples=1, seed=3, prompt="a red circle top", steps=3)]  # wider: its own
    batcher = ImageBatcher(fam, net, window_s=0.3)
    try:
        draws = [prepare_images(fam, config, [], ImageGenRequest(**a), tok) for a in asks]
        outs = [t.result(60) for t in _submit_together(batcher, draws)]
    finally:
        batcher.close()
    assert batcher.stats.sizes == [3, 1]
    for ask, out in zip(asks, outs, strict=True):
        alone = generate_images(fam, config, net, [], ImageGenRequest(**ask), tok).images
        assert np.array_equal(out.images, alone)


def test_a_full_queue_is_busy_and_close_fails_the_waiting():
    fam, config, net = _model("gan", conditional=True)
    batcher = ImageBatcher(fam, net, max_queue=2, window_s=5.0)  # the loop sleeps: all wait
    first = batcher.submit(_draw(fam, config, num_samples=1, seed=1))
    batcher.submit(_draw(fam, config, num_samples=1, seed=2))
    with pytest.raises(Busy, match="image generation busy: 0 requests sampling and 2 waiting"):
        batcher.submit(_draw(fam, config, num_samples=1, seed=3))
    batcher.close()
    with pytest.raises(GenloopError, match="the image batcher was closed"):
        first.result(5)
    with pytest.raises(GenloopError, match="the image batcher is closed"):
        batcher.submit(_draw(fam, config, num_samples=1, seed=4))


def test_a_failed_run_reaches_every_request_in_it():
    fam, config, net = _model("diffusion", conditional=True)
    batcher = ImageBatcher(fam, net, window_s=0.3)
    draws = [_draw(fam, config, num_samples=1, seed=s, steps=2) for s in (1, 2)]
    for d in draws:  # a mismatched class tensor: the family's sample fails for the whole stack
        d.sample.labels = torch.tensor([0, 1, 2])
    try:
        tickets = _submit_together(batcher, draws)
        for t in tickets:
            with pytest.raises(RuntimeError):
                t.result(60)
        later = batcher.submit(_draw(fam, config, num_samples=1, seed=3, steps=2))
        assert later.result(60).images.shape == (1, 8, 8, 1)  # the loop goes on
    finally:
        batcher.close()


def test_threads_submitting_at_once_get_their_own_images():
    fam, config, net = _model("diffusion", conditional=True)
    batcher = ImageBatcher(fam, net, window_s=0.05)
    results: dict[int, np.ndarray] = {}

    def ask(seed: int) -> None:
        results[seed] = batcher.generate(_draw(fam, config, num_samples=1, seed=seed, steps=3), 60).images

    threads = [threading.Thread(target=ask, args=(s,)) for s in range(6)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        batcher.close()
    assert sorted(results) == list(range(6)) and batcher.stats.requests == 6
    for seed, images in results.items():
        assert np.array_equal(images, _alone(fam, config, net, num_samples=1, seed=seed, steps=3))
