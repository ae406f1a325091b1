"""Engine processes for tests: start one on the test's OPTIQ_HOME, and make sure none outlives it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
GATED = ROOT / "tests" / "engine_gated.py"


def engine_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OPTIQ_ENGINE"}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


def poll(condition, timeout: float = 60.0, what: str = "condition"):
    """Wait until ``condition()`` is truthy (checked every 20 ms); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def record(home: Path) -> dict | None:
    try:
        return json.loads((home / "state" / "engine.json").read_text())
    except (FileNotFoundError, ValueError):
        return None


def at_a_terminal() -> None:
    """For a child about to exec, as a shell's foreground command: Ctrl-C and hang-up are
    delivered. A suite started in the background (`cmd &`) inherits SIGINT ignored, one under
    `nohup` SIGHUP ignored, and the child would keep them so."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)


def start_engine(home: Path, *args: str, gate: Path | None = None, **env: str) -> subprocess.Popen:
    """An engine process in its own session; returns once its record names it."""
    extra = {"OPTIQ_TEST_GATE": str(gate)} if gate else {}
    cmd = [sys.executable, str(GATED)] if gate else [sys.executable, "-m", "optiq_tui"]
    proc = subprocess.Popen([*cmd, "serve", *args], env=engine_env(**extra, **env), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    poll(lambda: (record(home) or {}).get("pid") == proc.pid or proc.poll() is not None, what="engine record")
    assert proc.poll() is None, proc.stdout.read()
    return proc


def kill_engines(home: Path, *procs: subprocess.Popen) -> None:
    """SIGKILL the given engines and any engine recorded for ``home`` (started in the background)."""
    pids = {p.pid for p in procs}
    rec = record(home)
    if rec:
        pids.add(rec["pid"])
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in procs:
        p.wait(10)
    for pid in pids - {p.pid for p in procs}:
        poll(lambda: not _alive(pid), 10, f"engine {pid} to exit")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of ours that nobody reaped is a zombie: not running.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def assert_on(app, engine_kind: str) -> None:
    """The app ran its jobs on the engine ``engine_kind`` asked for."""
    assert app.engine is not None and app.in_process == (engine_kind == "in-process")
