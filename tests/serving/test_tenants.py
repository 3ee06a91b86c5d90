"""Tenant isolation: nothing crosses owners. Every route is enumerated from the app itself (as
tests/serving/test_auth.py does) and each one that reads or writes records is checked with two
keys of each scope (admin, generate, read) under two owners (alice, bob): another owner's
generation is 404 exactly as a missing one (ids don't reveal existence), nobody rates or
prefers another owner's, lists hold only the caller's, admins see everything, and read keys may
not generate (403). A route added later fails here until it is classified and checked.

The records are seeded through the store (no model needed); the last test generates through a
real ``genloop serve`` to show that what a key makes is stamped with its owner."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import GenerationRecord, Store

from ..conftest import BIN  # noqa: TID252
from .test_auth import app_routes

OWNERS = ("alice", "bob")
SCOPES = ("admin", "generate", "read")
MISSING = "0123456789abcdef"  # a generation id nobody has

# routes that neither read nor write records: models, the service, the studio's files
NO_RECORDS = {("GET", "/health"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/"),
              ("GET", "/studio/{name:path}"), ("GET", "/v1/models"), ("GET", "/v1/models/{model}"),
              ("POST", "/v1/embeddings"),  # embeddings are computed, never recorded
              ("POST", "/v1/moderations")}  # a verdict on the text given, nothing recorded


@dataclass
class Tenants:
    client: TestClient
    keys: dict[tuple[str, str], str]  # (owner, scope) -> secret
    made: dict[str | None, list[GenerationRecord]]  # owner (None: the CLI's) -> two generations

    def call(self, owner: str, scope: str, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.keys[owner, scope]}"}
        return self.client.request(method, path, headers=headers, **kw)

    def ids(self, owner: str | None) -> set[str]:
        return {g.id for g in self.made[owner]}

    def callers(self) -> Iterator[tuple[str, str]]:
        for owner in OWNERS:
            for scope in SCOPES:
                yield owner, scope


def other(owner: str) -> str:
    return "bob" if owner == "alice" else "alice"


@pytest.fixture
def tenants(workspace: Path) -> Iterator[Tenants]:
    store = Store()
    keys = {}
    for owner in OWNERS:
        for scope in SCOPES:
            _, keys[owner, scope] = store.create_key(f"{owner}-{scope}", scope=scope, owner=owner)
    staged = workspace / "staging" / "m"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text("{}")
    mv = store.register_model("m", staged, family="gpt")
    made: dict[str | None, list[GenerationRecord]] = {}
    for i, owner in enumerate([*OWNERS, None] * 2):
        made.setdefault(owner, []).append(store.record_generation(
            model=mv, kind="text", request={"prompt": "Hi"}, seed=i, output=f"{owner} {i}",
            file=None, content_hash=f"h{i}", timings={}, owner=owner))
    with TestClient(create_app(ServeConfig(rate_limit=0), store=store)) as client:
        yield Tenants(client, keys, made)
    store.close()


def not_found_as_if_missing(r: httpx.Response, gid: str, missing: httpx.Response) -> None:
    assert r.status_code == 404, r.text
    assert r.json() == {**missing.json(), "error": {
        **missing.json()["error"], "message": missing.json()["error"]["message"].replace(MISSING, gid)}}


def forbidden(r: httpx.Response) -> None:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert error["type"] == "permission_error" and "scope 'read'" in error["message"]


# --- one check per route that reads or writes records -------------------------------------------


def check_list(t: Tenants) -> None:
    for owner, scope in t.callers():
        page = t.call(owner, scope, "GET", "/v1/generations").json()
        seen = {g["id"] for g in page["data"]}
        if scope == "admin":
            assert seen == t.ids("alice") | t.ids("bob") | t.ids(None), (owner, scope)
        else:
            assert seen == t.ids(owner), (owner, scope)
        for gid in t.ids(other(owner)):  # paging after another owner's id tells nothing
            r = t.call(owner, scope, "GET", "/v1/generations", params={"before": gid})
            assert r.status_code == (200 if scope == "admin" else 404), (owner, scope, r.text)


def check_one(t: Tenants, suffix: str = "") -> None:
    for owner, scope in t.callers():
        missing = t.call(owner, scope, "GET", f"/v1/generations/{MISSING}{suffix}")
        assert missing.status_code == 404
        for gid in t.ids(owner):
            assert t.call(owner, scope, "GET", f"/v1/generations/{gid}{suffix}").status_code == 200
        for gid in t.ids(other(owner)) | t.ids(None):
            r = t.call(owner, scope, "GET", f"/v1/generations/{gid}{suffix}")
            if scope == "admin":
                assert r.status_code == 200, (owner, scope, r.text)
            else:
                not_found_as_if_missing(r, gid, missing)


def check_content(t: Tenants) -> None:
    check_one(t, "/content")
    (mine,) = [g for g in t.made["alice"] if g.seed == 0]
    assert t.call("alice", "read", "GET", f"/v1/generations/{mine.id}/content").text == "alice 0"


def check_input(t: Tenants) -> None:
    """The image a caption read: these generations read none (a 400 saying so) where they are
    seen, and are missing (a 404, as for an id nobody has) where they are not."""
    for owner, scope in t.callers():
        missing = t.call(owner, scope, "GET", f"/v1/generations/{MISSING}/input")
        assert missing.status_code == 404
        for gid in t.ids(owner):
            r = t.call(owner, scope, "GET", f"/v1/generations/{gid}/input")
            assert r.status_code == 400 and "read no image" in r.json()["error"]["message"]
        for gid in t.ids(other(owner)) | t.ids(None):
            r = t.call(owner, scope, "GET", f"/v1/generations/{gid}/input")
            if scope == "admin":
                assert r.status_code == 400, (owner, scope, r.text)
            else:
                not_found_as_if_missing(r, gid, missing)


def check_feedback(t: Tenants) -> None:
    path = "/v1/generations/{}/feedback"
    for owner, scope in t.callers():
        missing = t.call(owner, scope, "POST", path.format(MISSING), json={"rating": 3})
        for gid in t.ids(owner):
            r = t.call(owner, scope, "POST", path.format(gid), json={"rating": 4})
            if scope == "read":
                forbidden(r)
            else:
                assert r.status_code == 201, (owner, scope, r.text)
        for gid in t.ids(other(owner)):
            r = t.call(owner, scope, "POST", path.format(gid), json={"thumbs": "up"})
            if scope == "admin":
                assert r.status_code == 201, r.text
            elif scope == "read":
                forbidden(r)
            else:
                not_found_as_if_missing(r, gid, missing)
    # each key sees only its owner's feedback, on the generations it sees; admins see all of it
    for owner, scope in t.callers():
        for gid in t.ids(owner):
            feedback = t.call(owner, scope, "GET", f"/v1/generations/{gid}").json()["feedback"]
            kinds = sorted(f["kind"] for f in feedback)
            if scope == "admin":  # its owner's generate and admin ratings, the other admin's thumbs
                assert kinds == ["rating", "rating", "thumbs"], (owner, scope, feedback)
            else:  # the ratings of its owner's two keys that may rate
                assert kinds == ["rating", "rating"], (owner, scope, feedback)
        listed = t.call(owner, scope, "GET", "/v1/generations").json()["data"]
        on_list = sum(len(g["feedback"]) for g in listed)
        assert on_list == (12 if scope == "admin" else 4), (owner, scope)


def check_preference(t: Tenants) -> None:
    for owner, scope in t.callers():
        mine, theirs = sorted(t.ids(owner)), sorted(t.ids(other(owner)))
        same = t.call(owner, scope, "POST", "/v1/preferences",
                      json={"chosen": mine[0], "rejected": mine[1]})
        if scope == "read":
            forbidden(same)
            continue
        assert same.status_code == 201, (owner, scope, same.text)
        for chosen, rejected in ((mine[0], theirs[0]), (theirs[0], mine[0])):
            r = t.call(owner, scope, "POST", "/v1/preferences",
                       json={"chosen": chosen, "rejected": rejected})
            if scope == "admin":  # sees both, but a preference compares one owner's outputs
                assert r.status_code == 400 and "different owners" in r.text, r.text
            else:
                assert r.status_code == 404 and theirs[0] in r.json()["error"]["message"], r.text
        r = t.call(owner, scope, "POST", "/v1/preferences",
                   json={"chosen": theirs[0], "rejected": theirs[1]})
        assert r.status_code == (201 if scope == "admin" else 404), (owner, scope, r.text)


def check_feedback_summary(t: Tenants) -> None:
    for owner in OWNERS:  # each owner rates its own two outputs
        for gid in t.ids(owner):
            r = t.call(owner, "generate", "POST", f"/v1/generations/{gid}/feedback",
                       json={"rating": 5})
            assert r.status_code == 201, r.text
    for owner, scope in t.callers():
        r = t.call(owner, scope, "GET", "/v1/models/m/feedback")
        assert r.status_code == 200, (owner, scope, r.text)
        summary = r.json()
        if scope == "admin":
            assert (summary["generations"], summary["feedback"]["ratings"]) == (6, 4), summary
        else:
            assert (summary["generations"], summary["feedback"]["ratings"]) == (2, 2), summary
            assert summary["owner"] == owner and summary["usable"]["sft"] == 2
        assert t.call(owner, scope, "GET", "/v1/models/nope/feedback").status_code == 404


def check_generate(path: str, body: dict[str, Any]) -> Callable[[Tenants], None]:
    """Read keys may not generate (403 before the model is even looked up); the others reach
    the model (here: one that does not exist, 404 naming it). Stamping: test_generated_*."""

    def check(t: Tenants) -> None:
        for owner, scope in t.callers():
            r = t.call(owner, scope, "POST", path, json={"model": "nope", **body})
            if scope == "read":
                forbidden(r)
            else:
                assert r.status_code == 404 and "'nope'" in r.text, (owner, scope, r.text)

    return check


# --- files and fine-tuning jobs: an owner's file and job, and the workspace's -----------------

MISSING_FILE, MISSING_JOB = "file-0123456789abcdef01234567", "ftjob-0123456789abcdef01234567"


def tuning(t: Tenants) -> dict[str | None, tuple[str, str]]:
    """A file and a job (on that file) of alice, bob and the workspace: owner -> (file, job)."""
    store = t.client.app.state.genloop.store
    made = {}
    for owner in (*OWNERS, None):
        path = Path(store.url.removeprefix("sqlite:///")).parent / f"{owner}.jsonl"
        path.write_text('{"prompt": "a", "completion": "b"}\n')
        f = store.add_file(file_id=f"file-{uuid.uuid4().hex[:24]}", purpose="fine-tune",
                           filename=path.name, size=34, lines=1, path=str(path), owner=owner)
        job = store.create_job(model="m@1", objective="sft", method={"type": "supervised"},
                               hyperparameters={}, data={}, seed=0, training_file=f.id, owner=owner)
        made[owner] = (f.id, job.id)
    return made


def seen(t: Tenants, owner: str, scope: str, made: dict[str | None, tuple[str, str]]) -> set[str | None]:
    """Whose records a caller sees."""
    return {*OWNERS, None} if scope == "admin" else {owner}


def check_tuning_list(path: str, index: int) -> Callable[[Tenants], None]:
    def check(t: Tenants) -> None:
        made = tuning(t)
        for owner, scope in t.callers():
            listed = {x["id"] for x in t.call(owner, scope, "GET", path).json()["data"]}
            assert listed == {made[o][index] for o in seen(t, owner, scope, made)}, (owner, scope)

    return check


def check_tuning_one(template: str, index: int, missing_id: str) -> Callable[[Tenants], None]:
    def check(t: Tenants) -> None:
        made = tuning(t)
        for owner, scope in t.callers():
            missing = t.call(owner, scope, "GET", template.format(missing_id))
            assert missing.status_code == 404, missing.text
            for o, ids in made.items():
                r = t.call(owner, scope, "GET", template.format(ids[index]))
                if o in seen(t, owner, scope, made):
                    assert r.status_code == 200, (owner, scope, r.text)
                else:
                    assert r.status_code == 404, (owner, scope, r.text)
                    assert r.json()["error"]["message"] == missing.json()["error"]["message"].replace(
                        missing_id, ids[index])

    return check


def check_tuning_write(method: str, template: str, index: int) -> Callable[[Tenants], None]:
    """Delete a file, cancel a job: read keys 403, another owner's 404 as a missing one, one's
    own (or, for an admin, anyone's) done."""

    def check(t: Tenants) -> None:
        for owner, scope in t.callers():
            made = tuning(t)  # fresh records for each caller
            for o in (other(owner), None, owner):
                target = template.format(made[o][index])
                r = t.call(owner, scope, method, target)
                if scope == "read":
                    forbidden(r)
                elif o == owner or scope == "admin":
                    assert r.status_code == 200, (owner, scope, r.text)
                    after = t.call(owner, "admin", "GET", target.removesuffix("/cancel"))
                    assert after.status_code == 404 if method == "DELETE" else \
                        after.json()["status"] == "cancelled"
                else:
                    assert r.status_code == 404 and made[o][index] in r.text, (owner, scope, r.text)

    return check


def check_upload(t: Tenants) -> None:
    for owner, scope in t.callers():
        r = t.call(owner, scope, "POST", "/v1/files", data={"purpose": "fine-tune"},
                   files={"file": ("f.jsonl", b'{"prompt": "a", "completion": "b"}\n')})
        if scope == "read":
            forbidden(r)
            continue
        assert r.status_code == 200, r.text
        fid = r.json()["id"]
        assert t.call(owner, "read", "GET", f"/v1/files/{fid}").status_code == 200
        assert t.call(other(owner), "generate", "GET", f"/v1/files/{fid}").status_code == 404


def check_job_create(t: Tenants) -> None:
    made = tuning(t)
    for owner, scope in t.callers():
        for o in (owner, other(owner), None):
            r = t.call(owner, scope, "POST", "/v1/fine_tuning/jobs",
                       json={"model": "m", "training_file": made[o][0]})
            if scope == "read":
                forbidden(r)
            elif o == owner or scope == "admin":  # the file is found: `m` is no model to tune
                assert "no file with id" not in r.text, (owner, scope, r.text)
            else:  # another's file is unknown, as a missing one is
                assert r.status_code == 400 and f"no file with id '{made[o][0]}'" in r.text, r.text


CHECKS: dict[tuple[str, str], Callable[[Tenants], None]] = {
    ("POST", "/v1/files"): check_upload,
    ("GET", "/v1/files"): check_tuning_list("/v1/files", 0),
    ("GET", "/v1/files/{file_id}"): check_tuning_one("/v1/files/{}", 0, MISSING_FILE),
    ("GET", "/v1/files/{file_id}/content"): check_tuning_one("/v1/files/{}/content", 0, MISSING_FILE),
    ("DELETE", "/v1/files/{file_id}"): check_tuning_write("DELETE", "/v1/files/{}", 0),
    ("POST", "/v1/fine_tuning/jobs"): check_job_create,
    ("GET", "/v1/fine_tuning/jobs"): check_tuning_list("/v1/fine_tuning/jobs", 1),
    ("GET", "/v1/fine_tuning/jobs/{job_id}"): check_tuning_one("/v1/fine_tuning/jobs/{}", 1, MISSING_JOB),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/events"): check_tuning_one(
        "/v1/fine_tuning/jobs/{}/events", 1, MISSING_JOB),
    ("GET", "/v1/fine_tuning/jobs/{job_id}/checkpoints"): check_tuning_one(
        "/v1/fine_tuning/jobs/{}/checkpoints", 1, MISSING_JOB),
    ("POST", "/v1/fine_tuning/jobs/{job_id}/cancel"): check_tuning_write(
        "POST", "/v1/fine_tuning/jobs/{}/cancel", 1),

    ("GET", "/v1/generations"): check_list,
    ("GET", "/v1/generations/{generation_id}"): check_one,
    ("GET", "/v1/generations/{generation_id}/content"): check_content,
    ("GET", "/v1/generations/{generation_id}/input"): check_input,
    ("GET", "/v1/generations/{generation_id}/provenance"): lambda t: check_one(t, "/provenance"),
    ("POST", "/v1/generations/{generation_id}/feedback"): check_feedback,
    ("POST", "/v1/preferences"): check_preference,
    ("GET", "/v1/models/{model}/feedback"): check_feedback_summary,
    ("POST", "/v1/completions"): check_generate("/v1/completions", {"prompt": "x"}),
    ("POST", "/v1/chat/completions"): check_generate(
        "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
    ("POST", "/v1/images/generations"): check_generate("/v1/images/generations", {"prompt": "7"}),
}


def test_every_route_is_classified() -> None:
    routes = set(app_routes())
    unclassified = routes - NO_RECORDS - set(CHECKS)
    assert not unclassified, f"classify these routes in {__name__}: {sorted(unclassified)}"
    assert set(CHECKS) <= routes and NO_RECORDS <= routes  # nothing stale


@pytest.mark.parametrize("route", sorted(CHECKS), ids=" ".join)
def test_nothing_crosses_owners(tenants: Tenants, route: tuple[str, str]) -> None:
    CHECKS[route](tenants)


def test_with_auth_off_the_caller_is_the_local_admin(workspace: Path) -> None:
    store = Store()
    staged = workspace / "staging" / "m"
    staged.mkdir(parents=True)
    (staged / "config.json").write_text("{}")
    mv = store.register_model("m", staged, family="gpt")
    made = [store.record_generation(model=mv, kind="text", request={"prompt": "Hi"}, seed=i,
                                    output=str(i), file=None, content_hash=f"h{i}", timings={},
                                    owner=owner) for i, owner in enumerate(("alice", None, None))]
    try:
        with TestClient(create_app(ServeConfig(auth=False), store=store)) as c:
            assert {g["id"] for g in c.get("/v1/generations").json()["data"]} == {g.id for g in made}
            assert c.post(f"/v1/generations/{made[0].id}/feedback", json={"rating": 5}).status_code == 201
            assert c.post("/v1/preferences", json={"chosen": made[1].id,
                                                   "rejected": made[2].id}).status_code == 201
        assert {f.owner for f in store.list_feedback()} == {None}  # the workspace's, as the CLI's
    finally:
        store.close()


# --- a real server: what a key generates is its owner's -----------------------------------------


def make_key(served_workspace: Any, name: str, scope: str, owner: str) -> str:
    out = subprocess.run([str(BIN / "genloop"), "keys", "create", name, "--scope", scope,
                          "--owner", owner], env=served_workspace.env(), check=True,
                         capture_output=True, text=True, timeout=60).stdout
    return next(w for w in out.split() if w.startswith("gl_"))


@pytest.mark.slow
def test_generated_records_belong_to_the_key_owner(server: Any, served_workspace: Any) -> None:
    keys = {(owner, scope): make_key(served_workspace, f"t-{owner}-{scope}", scope, owner)
            for owner in OWNERS for scope in SCOPES}
    made = []
    with server.client(keys["alice", "generate"]) as c:
        r = c.post("/v1/completions", json={"model": served_workspace.text_model, "prompt": "Th",
                                            "max_tokens": 3, "n": 2, "seed": 1})
        made += [choice["generation_id"] for choice in r.json()["choices"]]
        with c.stream("POST", "/v1/chat/completions", json={
                "model": served_workspace.text_model, "max_tokens": 3, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}) as s:
            made += [line.split('"generation_id": "')[1][:32] for line in s.iter_lines()
                     if '"generation_id"' in line]
        r = c.post("/v1/images/generations", json={"model": served_workspace.image_model, "n": 1})
        made += [image["generation_id"] for image in r.json()["data"]]
    assert len(made) == 4
    with server.client(keys["alice", "read"]) as c:
        listed = {g["id"] for g in c.get("/v1/generations", params={"limit": 500}).json()["data"]}
        assert set(made) == listed  # alice's keys made nothing else in this workspace
        for gid in made:
            assert c.get(f"/v1/generations/{gid}/content").status_code == 200
        assert c.post("/v1/completions", json={"model": served_workspace.text_model,
                                               "prompt": "x"}).status_code == 403
    with server.client(keys["bob", "generate"]) as c:
        assert not set(made) & {g["id"] for g in c.get("/v1/generations").json()["data"]}
        for gid in made:
            assert c.get(f"/v1/generations/{gid}").status_code == 404
            assert c.post(f"/v1/generations/{gid}/feedback", json={"rating": 1}).status_code == 404
    with server.client(keys["bob", "admin"]) as c:
        for gid in made:
            assert c.get(f"/v1/generations/{gid}").status_code == 200
