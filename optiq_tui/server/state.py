"""Where a running engine is recorded: its pid, address and start time, and its API key.

One engine per OPTIQ_HOME: the serving process holds an exclusive lock on
``engine.lock`` for its whole life, so a second one refuses to start, and a
record whose process is gone (killed) is stale and cleared on sight.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

from optiq_tui.library.staging import pid_alive
from optiq_tui.progress import OptiqError
from optiq_tui.settings import paths

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class EngineRecord:
    pid: int
    address: str
    started: float
    host: str
    key_required: bool


def _file() -> Path:
    return paths().state / "engine.json"


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` atomically with 0600 permissions from the first byte."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def write_record(record: EngineRecord) -> None:
    _write_private(_file(), json.dumps(asdict(record)))


def read_record() -> EngineRecord | None:
    """The running engine's record; a stale one (its process gone) is removed and None returned."""
    try:
        record = EngineRecord(**json.loads(_file().read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        _file().unlink(missing_ok=True)  # unreadable: a torn write of a killed engine
        return None
    if not pid_alive(record.pid) or not _locked():
        clear_record(record.pid)
        return None
    return record


def clear_record(pid: int) -> None:
    """Remove the record if it is still the one of ``pid`` (a newer engine may have replaced it)."""
    try:
        if json.loads(_file().read_text()).get("pid") == pid:
            _file().unlink()
    except (FileNotFoundError, ValueError):
        pass


def _locked() -> bool:
    """Whether some process holds the engine lock (a pid reused after a kill does not)."""
    try:
        with open(paths().state / "engine.lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(f, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True


def take_lock() -> IO[str]:
    """Hold the one-engine lock for this process's life; raises if another engine has it."""
    f = open(paths().state / "engine.lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise OptiqError("an engine already runs for this OPTIQ_HOME (see `optiq-chat serve --status`)") from None
    return f


def requires_key(host: str) -> bool:
    """Any address but loopback's exact names needs the API key."""
    return host not in LOOPBACK


def api_key(create: bool = False) -> str | None:
    """The API key for non-loopback binds; generated (0600) on first use when ``create``."""
    path = api_key_file()
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        if not create:
            return None
    key = secrets.token_urlsafe(32)
    _write_private(path, key + "\n")
    return key


def api_key_file() -> Path:
    return paths().config / "api_key"


def log_file() -> Path:
    return paths().state / "engine.log"
