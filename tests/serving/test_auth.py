"""Every route but /health refuses a missing, wrong or revoked key — routes enumerated from the
app itself, so a route added later is covered without touching this test — and no secret is
stored or logged in plain text."""

from __future__ import annotations

import base64
import re
import subprocess

import httpx
import pytest

from genloop.serving.app import create_app
from genloop.serving.settings import ServeConfig
from genloop.store import Store

from ..conftest import BIN  # noqa: TID252
from .conftest import create_key, start_server


def app_routes() -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, including ones FastAPI adds itself."""
    app = create_app(ServeConfig(), store=Store("sqlite://"))
    found = []
    for route in app.routes:
        contexts = route.effective_route_contexts() if hasattr(route, "effective_route_contexts") \
            else [route]
        for r in contexts:
            for method in sorted(getattr(r, "methods", None) or {"GET"}):
                if method != "HEAD":
                    found.append((method, r.path))
    return found


def concrete(path: str) -> str:
    return re.sub(r"\{([^}:]+)(:path)?\}", lambda m: "ab12" if m[1] != "model" else "tiny-text", path)


def test_the_route_list_is_not_empty_and_has_the_api():
    paths = {p for _, p in app_routes()}
    assert {"/health", "/v1/models", "/v1/completions", "/v1/chat/completions",
            "/v1/images/generations", "/v1/generations/{generation_id}", "/metrics", "/"} <= paths


@pytest.fixture(scope="module")
def revoked_key(served_workspace):
    key = create_key(served_workspace.home, "to-revoke")
    key_id = key.split("_")[1]
    subprocess.run([str(BIN / "genloop"), "keys", "revoke", key_id], env=served_workspace.env(),
                   check=True, capture_output=True, timeout=60)
    return key


@pytest.mark.parametrize("method,path", app_routes())
def test_every_route_but_health_refuses_bad_keys(server, revoked_key, method, path):
    url = server.url + concrete(path)
    body = {} if method == "POST" else None
    headers_cases = {
        "missing": {},
        "wrong": {"Authorization": "Bearer gl_0123456789ab_not-a-real-secret"},
        "malformed": {"Authorization": "Bearer nonsense"},
        "revoked": {"Authorization": f"Bearer {revoked_key}"},
        "wrong basic": {"Authorization": "Basic " + base64.b64encode(b"u:gl_bad_bad").decode()},
    }
    for case, headers in headers_cases.items():
        r = httpx.request(method, url, headers=headers, json=body, timeout=30)
        if path == "/health":
            assert r.status_code == 200, case
        else:
            assert r.status_code == 401, f"{method} {path} with a {case} key: {r.status_code}"
            assert r.json()["error"]["type"] == "authentication_error"


def test_a_good_key_opens_them_and_basic_auth_works_for_browsers(server, served_workspace):
    r = httpx.get(server.url + "/", timeout=30)
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    basic = base64.b64encode(f"studio:{served_workspace.key}".encode()).decode()
    r = httpx.get(server.url + "/", headers={"Authorization": f"Basic {basic}"}, timeout=30)
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    with server.client(served_workspace.key) as c:
        assert c.get("/v1/models").status_code == 200
        assert c.get("/metrics").status_code == 200
        assert c.get("/openapi.json").json()["info"]["title"] == "genloop"


def test_no_secret_is_stored_or_logged(tmp_path, served_workspace):
    key = create_key(served_workspace.home, "secret-check")
    srv = start_server(served_workspace, "--log-level", "debug", log=tmp_path / "serve.log")
    try:
        with srv.client(key) as c:
            assert c.get("/v1/models").status_code == 200
            c.post("/v1/completions", json={"model": "tiny-text", "prompt": "x", "max_tokens": 2})
        with srv.client("gl_0123456789ab_" + key.split("_", 2)[2]) as c:  # a near miss is logged?
            assert c.get("/v1/models").status_code == 401
    finally:
        srv.stop()
    secret = key.split("_", 2)[2]
    assert secret not in (tmp_path / "serve.log").read_text()
    for f in served_workspace.home.rglob("*"):
        if f.is_file() and f.stat().st_size < 50_000_000:
            assert secret.encode() not in f.read_bytes(), f"the secret is in {f}"
