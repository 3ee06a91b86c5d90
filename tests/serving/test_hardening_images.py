"""Issue 10's image defects, each reproduced: provenance that belongs to its own generation (6),
one seeding rule for every modality (10), image URLs that never come from the Host header (11),
and a copied workspace that serves from the copy (13).

Most tests register untrained tiny models in a fresh workspace (milliseconds, no training); the
last one trains the shared tiny workspace through the CLI and serves a copy of it.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from genloop.generation import service
from genloop.generation.image import read_provenance
from genloop.generation.service import ImageModel, image_png, load, replay
from genloop.models.family import ImageRequest
from genloop.models.modeldir import ModelDir
from genloop.models.registry import FAMILIES
from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store

# the image families drawn from a class (or nothing): a text-to-image family needs a prompt and a
# captioner an image (the contract test draws those with their own conditioning)
IMAGE_FAMILIES = [f for f in FAMILIES.values() if f.generative and not f.streaming
                  and f.reads in (None, "class_label")]
CLASSES = ["zero", "one", "two"]


def register_untrained(name: str, family: str, conditional: bool = True) -> str:
    """Register an untrained tiny model of ``family`` (8×8 grey, 3 classes) in the workspace."""
    from genloop.config import settings

    fam = FAMILIES[family]
    config = fam.make_config("tiny", image_size=8, channels=1, num_classes=3, conditional=conditional)
    torch.manual_seed(0)
    staged = ModelDir(settings().models_dir / f".staging-{name}")
    staged.path.mkdir(parents=True)
    staged.write_network(fam, config, fam.build(config))
    staged.write_labels(CLASSES)
    return Store().register_model(name, staged.path, family=family).ref


@pytest.fixture
def images(workspace, one_thread) -> dict[str, ImageModel]:  # noqa: ARG001
    service._CACHE.clear()
    models = {}
    for family in ("gan", "vae", "diffusion"):
        model = load(register_untrained(f"u-{family}", family))
        assert isinstance(model, ImageModel)
        models[family] = model
    yield models
    service._CACHE.clear()


@pytest.fixture
def api(images):  # noqa: ARG001
    with TestClient(create_app(ServeConfig(auth=False))) as client:
        yield client


# --- 6: each generation's PNG carries its own provenance ----------------------------------------


def test_identical_pixels_keep_each_generation_its_own_provenance(images, api):
    gan = images["gan"]
    # a GAN ignores the diffusion settings: two requests that differ only there draw one image
    first = gan.generate(num_samples=1, seed=3, steps=7).records[0]
    second = gan.generate(num_samples=1, seed=3, steps=9).records[0]
    assert first.content_hash == second.content_hash and first.file == second.file  # stored once
    assert read_provenance(Path(first.file)) == {}  # the shared pixels name no generation
    for record, steps in ((first, 7), (second, 9)):
        served = api.get(f"/v1/generations/{record.id}/content")
        assert served.status_code == 200 and served.headers["content-type"] == "image/png"
        stamp = read_provenance(io.BytesIO(served.content))
        assert stamp["generation"] == record.id and stamp["request"]["steps"] == steps
        assert stamp["content_hash"] == record.content_hash and stamp["seed"] == record.seed
        assert served.content == image_png(record)
    body = {"model": gan.ref, "n": 1, "seed": 3, "steps": 11, "response_format": "b64_json"}
    import base64

    data = api.post("/v1/images/generations", json=body).json()["data"][0]
    stamp = read_provenance(io.BytesIO(base64.b64decode(data["b64_json"])))
    assert stamp["generation"] == data["generation_id"] and stamp["request"]["steps"] == 11
    assert stamp["content_hash"] == first.content_hash


def test_a_tampered_pixel_file_is_an_error_not_another_image(images, api):
    record = images["vae"].generate(num_samples=1, seed=1).records[0]
    other = images["vae"].generate(num_samples=1, seed=2).records[0]
    shutil.copyfile(other.file, record.file)
    r = api.get(f"/v1/generations/{record.id}/content")
    assert r.status_code == 422 and "content hash" in r.json()["error"]["message"]
    Path(record.file).unlink()
    gone = api.get(f"/v1/generations/{record.id}/content")
    assert gone.status_code == 404 and "gone" in gone.json()["error"]["message"]


# --- 10: image i of a request is the request of one seeded choice_seed(seed, i) -----------------


@pytest.mark.parametrize("family,settings", [
    ("gan", {}), ("vae", {}), ("diffusion", {"steps": 4}),
    ("diffusion", {"steps": 4, "sampler": "ddpm"}), ("diffusion", {"steps": 4, "sampler": "dpmpp_2m"}),
])
def test_image_i_is_the_request_of_one_seeded_seed_plus_i(images, family, settings):
    model = images[family]
    batch = model.generate(num_samples=3, seed=3, class_label="one", **settings).records
    alone = [model.generate(num_samples=1, seed=3 + i, class_label="one", **settings).records[0]
             for i in range(3)]
    assert [r.content_hash for r in batch] == [r.content_hash for r in alone]
    assert len({r.content_hash for r in batch}) == 3  # each image its own draw
    for i, record in enumerate(batch):
        assert record.seed == 3 + i and record.request["seed"] == record.seed
        assert record.request["num_samples"] == 1 and record.request["index"] == i
        assert replay(record.id).matches


def test_classes_in_turn_are_recorded_so_each_image_replays_alone(images):
    records = images["diffusion"].generate(num_samples=4, seed=8, steps=3).records
    assert [r.output for r in records] == ["zero", "one", "two", "zero"]
    assert [r.request["class_label"] for r in records] == ["zero", "one", "two", "zero"]
    for record in records:
        again = replay(record.id)
        assert again.matches and again.output == record.output


def test_an_interpolation_is_one_draw_seeded_by_the_request(images):
    walk = images["vae"].generate(num_samples=4, seed=5, interpolate=True).records
    assert [r.seed for r in walk] == [5] * 4 and all(r.request["num_samples"] == 4 for r in walk)
    assert len({r.content_hash for r in walk}) > 1
    assert all(replay(r.id).matches for r in walk)


@pytest.mark.parametrize("family", IMAGE_FAMILIES, ids=lambda f: f.name)
@pytest.mark.parametrize("sampler", ["ddim", "ddpm", "dpmpp_2m"])
def test_sample_with_one_generator_per_image_draws_each_as_alone(family, sampler, one_thread):  # noqa: ARG001
    config = family.make_config("tiny", image_size=8, channels=1, num_classes=3, conditional=True)
    torch.manual_seed(0)
    model = family.build(config).eval()
    seeds = [11, 12, 13]
    request = ImageRequest(num_samples=3, steps=3, sampler=sampler)  # labels drawn too
    batch = family.sample(model, request, [torch.Generator().manual_seed(s) for s in seeds])
    alone = [family.sample(model, ImageRequest(num_samples=1, steps=3, sampler=sampler),
                           torch.Generator().manual_seed(s)) for s in seeds]
    assert torch.allclose(batch, torch.cat(alone), atol=1e-5)
    with pytest.raises(ValueError, match="2 generators for 3 images"):
        family.sample(model, request, [torch.Generator(), torch.Generator()])


# --- 11: URLs from configuration, never from the Host header -------------------------------------


def test_image_urls_never_come_from_the_host_header(images):
    gan = images["gan"].ref
    hostile = {"host": "evil.example:1234"}
    with TestClient(create_app(ServeConfig(auth=False, port=8123))) as client:
        data = client.post("/v1/images/generations", json={"model": gan, "n": 1, "seed": 1},
                           headers=hostile).json()["data"][0]
        assert data["url"] == f"http://127.0.0.1:8123/v1/generations/{data['generation_id']}/content"
        one = client.get(f"/v1/generations/{data['generation_id']}", headers=hostile).json()
        assert one["url"] == data["url"]
        listed = client.get("/v1/generations", headers=hostile).json()["data"][0]
        assert listed["url"] == data["url"]
    public = ServeConfig(auth=False, public_url="https://images.example.org/genloop/")
    with TestClient(create_app(public)) as client:
        data = client.post("/v1/images/generations", json={"model": gan, "n": 1, "seed": 1},
                           headers=hostile).json()["data"][0]
        assert data["url"] == (f"https://images.example.org/genloop/v1/generations/"
                               f"{data['generation_id']}/content")
    # on a wildcard bind address the server cannot know its name: a relative URL
    assert ServeConfig(host="0.0.0.0").base_url() == ""
    assert ServeConfig(host="::1", port=9).base_url() == "http://[::1]:9"
    for bad in ("evil.example", "ftp://x.example", "https://x.example/?q=1", "https://"):
        with pytest.raises(ValueError, match="public_url"):
            ServeConfig(public_url=bad)


# --- 13: a copied workspace serves from the copy ---------------------------------------------------


def test_the_store_keeps_workspace_paths_relative(images, workspace, tmp_path, monkeypatch):
    gan = images["gan"]
    records = gan.generate(num_samples=2, seed=4).records
    with Store().read() as s:
        from sqlalchemy import text

        paths = [p for (p,) in s.execute(text("SELECT path FROM model_versions"))]
        files = [f for (f,) in s.execute(text("SELECT file FROM generations"))]
    assert paths and all(not Path(p).is_absolute() and p.startswith("models/") for p in paths)
    assert all(not Path(f).is_absolute() and f.startswith("generations/") for f in files)
    copy = tmp_path / "copy"
    shutil.copytree(workspace, copy)
    shutil.rmtree(workspace)
    monkeypatch.setenv("GENLOOP_HOME", str(copy))
    service._CACHE.clear()
    store = Store()
    assert Path(store.resolve(gan.ref).path).is_relative_to(copy)
    for record in records:
        again = store.get_generation(record.id)
        assert Path(again.file).is_relative_to(copy) and Path(again.file).is_file()
        assert replay(record.id, store).matches  # the model loads from the copy too
    # a row written before paths were relative keeps its absolute path
    absolute = str(copy / "models" / "u-gan" / "1")
    with store.write() as s:
        s.execute(text("UPDATE model_versions SET path = :p WHERE name = 'u-gan'"), {"p": absolute})
    assert store.resolve(gan.ref).path == absolute
    assert load(gan.ref, store) is not None


@pytest.mark.slow
def test_a_copied_workspace_serves_the_same_models_and_images(tmp_path):
    """The Must-show: a trained tiny workspace with generated images, copied, the original
    deleted; the copy serves the same models and the same images (PNG bytes included)."""
    from .conftest import Workspace, make_workspace, start_server

    (tmp_path / "original").mkdir()
    original = make_workspace(tmp_path / "original")
    server = start_server(original)
    try:
        with server.client(original.key) as c:
            models = sorted(m["id"] for m in c.get("/v1/models").json()["data"])
            data = c.post("/v1/images/generations", json={
                "model": original.image_model, "n": 3, "seed": 7}).json()["data"]
            pngs = {d["generation_id"]: c.get(f"/v1/generations/{d['generation_id']}/content").content
                    for d in data}
    finally:
        server.stop()
    copy = tmp_path / "copy" / "home"
    shutil.copytree(original.home, copy)
    shutil.rmtree(original.home)
    moved = Workspace(copy, original.text_model, original.image_model, original.key)
    server = start_server(moved, "--public-url", "https://genloop.example")
    try:
        with server.client(moved.key) as c:
            assert sorted(m["id"] for m in c.get("/v1/models").json()["data"]) == models
            for gid, png in pngs.items():
                served = c.get(f"/v1/generations/{gid}/content")
                assert served.status_code == 200 and served.content == png
            again = c.post("/v1/images/generations", json={
                "model": original.image_model, "n": 3, "seed": 7}).json()["data"]
            assert all(d["url"].startswith("https://genloop.example/v1/generations/") for d in again)
            for old, new in zip(data, again, strict=True):  # the copy's model draws the same
                stamp = read_provenance(io.BytesIO(pngs[old["generation_id"]]))
                fresh = c.get(f"/v1/generations/{new['generation_id']}").json()
                assert fresh["content_hash"] == stamp["content_hash"]
            text = c.post("/v1/completions", json={"model": moved.text_model, "prompt": "The ",
                                                   "max_tokens": 4, "seed": 1})
            assert text.status_code == 200, text.text
    finally:
        server.stop()
