"""The engine's HTTP face without a process: API key, error objects, body limits."""

from __future__ import annotations

import stat

import pytest
from starlette.testclient import TestClient

from optiq_tui.engine.service import EngineService
from optiq_tui.server import state
from optiq_tui.server.app import MAX_BODY_BYTES, build_app


@pytest.fixture
def service():
    s = EngineService()
    yield s
    s.close()


def test_any_address_but_loopback_needs_the_key():
    assert not state.requires_key("127.0.0.1")
    assert not state.requires_key("::1")
    assert state.requires_key("0.0.0.0")
    assert state.requires_key("192.168.1.20")


def test_key_is_generated_once_with_0600(optiq_home):
    key = state.api_key(create=True)
    path = optiq_home / "config" / "api_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert state.api_key(create=True) == key == state.api_key()


def test_without_the_key_401_and_nothing_changes(service):
    key = state.api_key(create=True)
    http = TestClient(build_app(service, api_key=key))
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": key}):
        r = http.post("/v1/jobs/release", json={}, headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
    assert service.jobs() == []
    assert http.get("/health").status_code == 200  # liveness only, no data
    ok = http.post("/v1/jobs/release", json={}, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 202
    assert [j.kind for j in service.jobs()] == ["release"]


@pytest.mark.parametrize(
    ("path", "body", "status", "words"),
    [
        ("/v1/jobs/bogus", b"{}", 400, "unknown job kind"),
        ("/v1/jobs/quantize", b"{not json", 400, "not valid JSON"),
        ("/v1/jobs/quantize", b"[1]", 400, "JSON object"),
        ("/v1/jobs/quantize", b'{"model": 3}', 400, "model must be str"),
        ("/v1/jobs/quantize", b'{"modle": "x"}', 400, "unknown argument 'modle'"),
        ("/v1/jobs/load", b"{}", 400, "missing argument 'model'"),
        ("/v1/jobs/99/cancel", b"", 404, "no job 99"),
        ("/v1/jobs/load", b" " * (MAX_BODY_BYTES + 1), 413, "request body over"),
    ],
)
def test_bad_requests_get_one_line_error_objects(service, path, body, status, words):
    r = TestClient(build_app(service), base_url="http://127.0.0.1:8").post(path, content=body)
    assert r.status_code == status
    message = r.json()["error"]["message"]
    assert words in message and "Traceback" not in message and "\n" not in message
    assert service.jobs() == []


@pytest.mark.parametrize(
    "headers",
    [{"Host": "evil.example:8"}, {"Origin": "https://evil.example"}, {"Origin": "null"}],
)
def test_web_pages_cannot_drive_a_loopback_engine(service, headers):
    http = TestClient(build_app(service), base_url="http://127.0.0.1:8")
    r = http.post("/v1/jobs/release", json={}, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["type"] == "permission_error"
    assert service.jobs() == []
    assert http.post("/v1/jobs/release", json={}, headers={"Origin": "http://localhost:3000"}).status_code == 202
    assert TestClient(build_app(service), base_url="http://[::1]:8").get("/v1/jobs").status_code == 200
