"""`hub.pull` against a small stand-in for the Hub's HTTP API on 127.0.0.1 (tests never touch the network).

The stand-in serves the routes `huggingface_hub.snapshot_download` uses: the
revision info, the file tree and `resolve/` downloads (with Range requests).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from optiq_tui.library import catalog
from optiq_tui.library.hub import pull
from optiq_tui.progress import Cancelled, OptiqError, Progress

COMMIT = "a" * 40


class _Hub(BaseHTTPRequestHandler):
    repos: dict[str, Path] = {}
    requests: list[tuple[str, str, str | None]] = []

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, value) -> None:
        self._send(200, json.dumps(value).encode(), {"Content-Type": "application/json"})

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        self.requests.append((self.command, path, self.headers.get("Range")))
        if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/[^/]+(/.*)?", path):
            folder = self.repos.get(m.group(1))
            if folder is None:
                return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            files = sorted(p.name for p in folder.iterdir())
            if m.group(2) == "revision":
                return self._json({"id": m.group(1), "sha": COMMIT, "siblings": [{"rfilename": f} for f in files]})
            return self._json([
                {"type": "file", "path": f, "size": (folder / f).stat().st_size,
                 "oid": hashlib.sha1((folder / f).read_bytes()).hexdigest()}
                for f in files
            ])
        if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/[^/]+/(.+)", path):
            folder = self.repos.get(m.group(1))
            if folder is None or not (folder / m.group(2)).is_file():
                return self._send(404, b"", {"X-Error-Code": "EntryNotFound"})
            data = (folder / m.group(2)).read_bytes()
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            start = 0
            if (r := self.headers.get("Range")) and (rm := re.fullmatch(r"bytes=(\d+)-", r)):
                start = int(rm.group(1))
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(206, data[start:], headers)
            return self._send(200, data, headers)
        self._send(404)


@pytest.fixture
def hub(monkeypatch, tiny_llama_dir, tmp_path):
    """A stand-in Hub serving the tiny llama (plus files MLX does not need) as tester/tiny."""
    from huggingface_hub import constants

    repo = tmp_path / "repo"
    repo.mkdir()
    for f in tiny_llama_dir.iterdir():
        (repo / f.name).write_bytes(f.read_bytes())
    (repo / "README.md").write_text("# tiny\n")
    (repo / "model.gguf").write_bytes(b"GGUF" + b"\0" * 1000)
    _Hub.repos = {"tester/tiny": repo}
    _Hub.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    yield repo
    server.shutdown()
    server.server_close()


def test_pull_downloads_only_what_mlx_needs(hub):
    events = []
    info = pull("tester/tiny", progress=events.append)
    assert (info.name, info.source, info.repo_id) == ("tester/tiny", "hf-cache", "tester/tiny")
    names = sorted(p.name for p in info.path.iterdir())
    assert names == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    downloads = [e for e in events if isinstance(e, Progress) and e.stage == "download"]
    expected = sum((hub / n).stat().st_size for n in names)
    assert downloads[-1].done == downloads[-1].total == expected
    assert [m.name for m in catalog.scan().models] == ["tester/tiny"]


def test_cancelled_pull_is_not_listed_and_the_next_pull_completes(hub):
    cancel = threading.Event()

    def progress(event):
        if isinstance(event, Progress) and event.stage == "download":
            cancel.set()

    with pytest.raises(Cancelled):
        pull("tester/tiny", progress=progress, cancel=cancel)
    assert catalog.scan().models == []
    info = pull("tester/tiny")
    assert catalog.scan().models == [info]


def test_missing_repo(hub):
    with pytest.raises(OptiqError, match="the Hub has no model repo 'tester/nothing'"):
        pull("tester/nothing")


def test_repo_without_mlx_weights_is_refused_before_downloading(hub):
    (hub / "model.safetensors").unlink()
    with pytest.raises(OptiqError, match="no safetensors weights"):
        pull("tester/tiny")
    assert not any(method == "GET" and "/resolve/" in path for method, path, _ in _Hub.requests)


def test_no_network(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(OptiqError, match="cannot reach the Hugging Face Hub"):
        pull("tester/tiny")


def test_offline_mode(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OptiqError, match="HF_HUB_OFFLINE"):
        pull("tester/tiny")


def test_bad_repo_id(hub):
    with pytest.raises(OptiqError, match="not a valid repo id"):
        pull("not a repo id!")
