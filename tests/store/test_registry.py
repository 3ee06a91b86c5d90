import json
import multiprocessing
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError

from genloop.atomic import sha256_file
from genloop.errors import InvalidInput, NotFound
from genloop.store import ModelVersion, Store


@pytest.fixture
def home(workspace: Path, db_url: str) -> Path:
    """The workspace, its database on each backend in turn (``store`` is tests/conftest.py's)."""
    return workspace


def stage(root: Path, tag: str) -> Path:
    """A complete staged model dir, as the trainer leaves it (same filesystem as the home)."""
    d = root / "staging" / tag
    d.mkdir(parents=True)
    (d / "weights.safetensors").write_bytes(tag.encode())
    (d / "config.json").write_text("{}")
    return d


def _register_many(home: str, tag: str, n: int) -> list[int]:
    os.environ["GENLOOP_HOME"] = home
    s = Store()
    try:
        return [
            s.register_model("shared", stage(Path(home), f"{tag}-{i}"), family="gpt").version
            for i in range(n)
        ]
    finally:
        s.close()


def _assert_versions_consistent(home: Path, versions: list[int]) -> None:
    assert sorted(versions) == list(range(1, 11))
    s = Store()
    models = s.list_models()
    s.close()
    assert [m.version for m in models] == list(range(1, 11))
    on_disk = sorted(int(p.name) for p in (home / "models" / "shared").iterdir())
    assert on_disk == list(range(1, 11))
    # each dir holds the weights its row says it does
    tags = {(Path(m.path) / "weights.safetensors").read_text() for m in models}
    assert len(tags) == 10


def test_concurrent_register_from_threads(home: Path) -> None:
    results: list[int] = []
    lock = threading.Lock()

    def work(tag: str) -> None:
        got = _register_many(str(home), tag, 5)
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=work, args=(t,)) for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_versions_consistent(home, results)


def test_concurrent_register_from_processes(home: Path) -> None:
    Store().close()  # create the schema once, so the workers race only on registration
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        parts = pool.starmap(_register_many, [(str(home), "p", 5), (str(home), "q", 5)])
    _assert_versions_consistent(home, parts[0] + parts[1])


def test_register_moves_dir_and_records_lineage(store: Store, home: Path, tmp_path: Path) -> None:
    run = store.create_run(
        recipe={"lr": 1e-3},
        recipe_hash="rh",
        dataset_hash="dh",
        family="gpt",
        model_name="poet",
        path=str(home / "runs" / "x"),
    )
    staged = stage(home, "one")
    mv = store.register_model(
        "poet",
        staged,
        family="gpt",
        dataset_hash="dh",
        recipe_hash="rh",
        parent=None,
        run_id=run.id,
        metrics={"val_loss": 2.5},
    )
    assert isinstance(mv, ModelVersion)
    assert mv.ref == "poet@1" and mv.run_id == run.id
    assert not staged.exists()
    assert Path(mv.path) == home / "models" / "poet" / "1"
    assert (Path(mv.path) / "weights.safetensors").read_bytes() == b"one"
    mv2 = store.register_model("poet", stage(home, "two"), family="gpt", parent="poet@1")
    assert mv2.ref == "poet@2" and mv2.parent == "poet@1"


def test_register_with_failing_insert_leaves_no_dir(store: Store, home: Path) -> None:
    staged = stage(home, "x")
    with pytest.raises(NotFound, match="run 'nope' does not exist"):
        store.register_model("m", staged, family="gpt", run_id="nope")
    assert staged.is_dir() and (staged / "weights.safetensors").exists()
    assert list((home / "models" / "m").iterdir()) == []
    assert store.list_models() == []
    # and the name is still usable
    assert store.register_model("m", staged, family="gpt").ref == "m@1"


def test_register_with_failing_commit_moves_dir_back(
    store: Store, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.orm import Session

    def fail(self: Session) -> None:
        raise IntegrityError("INSERT", {}, Exception("injected"))

    staged = stage(home, "y")
    monkeypatch.setattr(Session, "commit", fail)
    with pytest.raises(IntegrityError):
        store.register_model("m", staged, family="gpt")
    monkeypatch.undo()
    assert staged.is_dir()
    assert list((home / "models" / "m").iterdir()) == []


def test_register_rejects_bad_names(store: Store, home: Path) -> None:
    staged = stage(home, "bad")
    for bad in ("Bad", "-x", "a/b", "", "x" * 65, "a@1"):
        with pytest.raises(InvalidInput, match=r"\^\[a-z0-9\]"):
            store.register_model(bad, staged, family="gpt")
    assert staged.is_dir() and not (home / "models").exists()


def test_register_moves_orphan_dir_aside(store: Store, home: Path) -> None:
    (home / "models" / "m" / "1").mkdir(parents=True)  # left by a crash before the row commit
    mv = store.register_model("m", stage(home, "z"), family="gpt")
    assert mv.version == 1
    assert (Path(mv.path) / "weights.safetensors").read_bytes() == b"z"
    assert any(p.name.startswith(".orphan-1-") for p in (home / "models" / "m").iterdir())


def test_resolve(store: Store, home: Path) -> None:
    with pytest.raises(NotFound, match="genloop train"):
        store.resolve("poet")
    for tag in ("a", "b"):
        store.register_model("poet", stage(home, tag), family="gpt")
    store.register_model("other", stage(home, "c"), family="lstm")
    assert store.resolve("poet").ref == "poet@2"
    assert store.resolve("poet@1").ref == "poet@1"
    with pytest.raises(NotFound, match="poet has versions: poet@1, poet@2"):
        store.resolve("poet@7")
    with pytest.raises(NotFound, match="available models: other, poet"):
        store.resolve("nope")
    for bad in ("poet@", "poet@x", "@1", "Poet", "poet@0", "a b"):
        with pytest.raises(InvalidInput, match="name@N"):
            store.resolve(bad)
    assert [m.ref for m in store.list_models()] == ["other@1", "poet@1", "poet@2"]


def test_update_model_metrics_merges_row_and_file(store: Store, home: Path) -> None:
    import json

    mv = store.register_model("m", stage(home, "a"), family="gpt", metrics={"loss": 1.0})
    assert json.loads((Path(mv.path) / "metrics.json").read_text()) == {"loss": 1.0}
    new = store.update_model_metrics("m", {"fid": 12.5})
    assert new.metrics == {"loss": 1.0, "fid": 12.5}
    assert store.resolve("m@1").metrics == new.metrics
    assert json.loads((Path(mv.path) / "metrics.json").read_text()) == new.metrics
    with pytest.raises(NotFound):
        store.update_model_metrics("m@2", {})


def test_datasets_idempotent_on_hash(store: Store) -> None:
    a = store.add_dataset("shakespeare", "abc", "text", "/d/abc", {"chars": 10})
    b = store.add_dataset("again", "abc", "text", "/d/abc", {})
    assert a == b and b.name == "shakespeare"
    assert store.get_dataset("abc").meta == {"chars": 10}
    with pytest.raises(NotFound):
        store.get_dataset("zzz")


def test_runs(store: Store) -> None:
    run = store.create_run(
        recipe={"model": {"family": "gpt"}},
        recipe_hash="r",
        dataset_hash="d",
        family="gpt",
        model_name="m",
        path="/runs/x",
    )
    assert len(run.id) == 12 and run.status == "running" and run.step == 0
    store.update_run(run.id, step=10, metrics={"loss": 3.0})
    done = store.update_run(run.id, status="diverged", metrics={"grad": 1}, error="nan loss")
    assert done.metrics == {"loss": 3.0, "grad": 1} and done.step == 10
    assert store.get_run(run.id) == done
    assert done.updated_at >= run.updated_at
    assert [r.id for r in store.list_runs()] == [run.id]
    with pytest.raises(InvalidInput, match="status"):
        store.update_run(run.id, status="paused")
    with pytest.raises(NotFound):
        store.get_run("missing")


def test_generation_round_trip(store: Store, home: Path, tmp_path: Path) -> None:
    mv = store.register_model("m", stage(home, "a"), family="gpt")
    img = tmp_path / "out.png"
    img.write_bytes(b"png")
    g1 = store.record_generation(
        model=mv,
        kind="text",
        request={"prompt": "ROMEO:", "max_new_tokens": 8},
        seed=7,
        output="ROMEO: hi",
        file=None,
        content_hash="h1",
        timings={"total_ms": 3.5},
    )
    g2 = store.record_generation(
        model=mv,
        kind="image",
        request={"steps": 2},
        seed=1,
        output=None,
        file=str(img),
        content_hash=sha256_file(img),
        timings={},
        safety={"flagged": False},
    )
    got = store.get_generation(g1.id)
    assert got == g1 and got.model == "m@1" and got.request["prompt"] == "ROMEO:"
    assert got.created_at.tzinfo is not None
    assert store.get_generation(g2.id).safety == {"flagged": False}
    assert {g.id for g in store.list_generations()} == {g1.id, g2.id}
    assert len(store.list_generations("m", limit=1)) == 1
    assert {g.id for g in store.list_generations("m@1")} == {g1.id, g2.id}
    assert store.list_generations(mv)[0].model_version_id == mv.id
    with pytest.raises(NotFound):
        store.get_generation("nope")


def _merge_concurrently(n: int, merge: Callable[[Store, int], None]) -> None:
    """``merge(store, i)`` from ``n`` threads at once, each with its own Store."""
    barrier = threading.Barrier(n)

    def work(i: int) -> None:
        s = Store()
        try:
            barrier.wait()
            merge(s, i)
        finally:
            s.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def test_concurrent_metric_merges_lose_no_key(store: Store, home: Path) -> None:
    """Merging is read-modify-write: each writer must see the others' keys (a row lock on
    PostgreSQL; SQLite's writers are serialized anyway)."""
    run = store.create_run(recipe={}, recipe_hash="r", dataset_hash="d", family="gpt",
                           model_name="m", path="/runs/x")
    store.register_model("m", stage(home, "a"), family="gpt", metrics={"loss": 1.0})
    _merge_concurrently(6, lambda s, i: s.update_run(run.id, metrics={f"k{i}": i}))
    _merge_concurrently(6, lambda s, i: s.update_model_metrics("m@1", {f"k{i}": i}))
    keys = {f"k{i}": i for i in range(6)}
    assert store.get_run(run.id).metrics == keys
    mv = store.resolve("m@1")
    assert mv.metrics == {"loss": 1.0, **keys}
    assert json.loads((Path(mv.path) / "metrics.json").read_text()) == mv.metrics


def test_concurrent_revokes_keep_the_first_time(store: Store) -> None:
    key, _ = store.create_key("laptop")
    times: list[object] = []
    _merge_concurrently(6, lambda s, i: times.append(s.revoke_key("laptop").revoked_at))
    assert len(set(times)) == 1 and store.list_keys()[0].revoked_at == times[0]
