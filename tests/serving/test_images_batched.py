"""``POST /v1/images/generations`` through the model's image batcher: concurrent requests share
sampling runs and still get the images their seeds draw alone; a full queue is 503."""

from __future__ import annotations

import threading

import pytest
import torch
from fastapi.testclient import TestClient

from genloop.generation import service
from genloop.generation.image import ImageGenRequest, prepare_images
from genloop.generation.image_batching import ImageBatcher
from genloop.generation.service import ImageModel, load
from genloop.models.modeldir import ModelDir
from genloop.models.registry import FAMILIES
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store


@pytest.fixture
def model(workspace, one_thread) -> ImageModel:  # noqa: ARG001
    """An untrained tiny class-conditional diffusion model (8×8 grey, 3 classes), loaded."""
    from genloop.config import settings

    service._CACHE.clear()
    fam = FAMILIES["diffusion"]
    config = fam.make_config("tiny", image_size=8, channels=1, num_classes=3, conditional=True)
    torch.manual_seed(0)
    staged = ModelDir(settings().models_dir / ".staging-u-diffusion")
    staged.path.mkdir(parents=True)
    staged.write_network(fam, config, fam.build(config))
    staged.write_labels(["zero", "one", "two"])
    m = load(Store().register_model("u-diffusion", staged.path, family="diffusion").ref)
    assert isinstance(m, ImageModel)
    yield m
    if m._batcher is not None:
        m._batcher.close()
    service._CACHE.clear()


def test_concurrent_requests_share_runs_and_get_their_seeds_images(model):
    bodies = [{"model": model.ref, "n": 1, "seed": s, "steps": 3, "class": "one",
               "response_format": "url"} for s in range(6)]
    replies: dict[int, dict] = {}
    # a wide window, so the six requests (sent at once from six threads) meet in one run
    model._batcher = ImageBatcher(model.family, model.network, max_batch=16, window_s=0.5)
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        def post(i: int) -> None:
            r = api.post("/v1/images/generations", json=bodies[i])
            assert r.status_code == 200, r.text
            replies[i] = r.json()

        threads = [threading.Thread(target=post, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert sorted(replies) == list(range(6))
        assert model._batcher.stats.requests == 6 and model._batcher.stats.runs < 6
        for i, reply in replies.items():
            record = Store().get_generation(reply["data"][0]["generation_id"])
            alone = model.generate(num_samples=1, seed=i, steps=3, class_label="one").records[0]
            assert record.content_hash == alone.content_hash  # batched = alone
            assert record.timings["batch_images"] >= 1


def test_a_full_image_queue_is_503_with_retry_after(model):
    # a loop that waits long before each run, its one queue place already taken
    model._batcher = ImageBatcher(model.family, model.network, max_queue=1, window_s=5.0)
    model._batcher.submit(prepare_images(model.family, model.config, model.class_names,
                                         ImageGenRequest(num_samples=1, seed=1, steps=2)))
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        r = api.post("/v1/images/generations", json={"model": model.ref, "n": 1, "steps": 2})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["type"] == "overloaded_error" and int(r.headers["retry-after"]) >= 1
    assert "image generation busy" in r.json()["error"]["message"]


def test_the_api_samples_with_dpm_solver_when_asked(model):
    with TestClient(create_app(ServeConfig(auth=False))) as api:
        r = api.post("/v1/images/generations", json={"model": model.ref, "n": 2, "seed": 4,
                                                     "sampler": "dpmpp_2m", "steps": 5})
        assert r.status_code == 200, r.text
        records = [Store().get_generation(d["generation_id"]) for d in r.json()["data"]]
        bad = api.post("/v1/images/generations", json={"model": model.ref, "sampler": "euler"})
    assert [rec.request["sampler"] for rec in records] == ["dpmpp_2m"] * 2
    alone = model.generate(num_samples=1, seed=5, sampler="dpmpp_2m", steps=5,
                           class_label=records[1].request["class_label"]).records[0]
    assert records[1].content_hash == alone.content_hash
    assert bad.status_code == 400 and "sampler" in bad.json()["error"]["message"]
