"""An SSH drop, as the kernel delivers it: the real `optiq-chat` TUI on a pseudo-terminal, mid-quantize,
loses its terminal (the master side closes, the session gets SIGHUP); the TUI goes, the job does not.

tests/test_ui_engine_proc.py ends a TUI with ``app.exit()``; this one ends the process the way sshd
does, against a gated engine process (tests/engine_gated.py), so the job waits for the test.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest

from tests.engine_proc import at_a_terminal, engine_env, kill_engines, poll, start_engine
from tests.ui_util import install_model

pytestmark = pytest.mark.timeout(300)

COLUMNS, LINES = 100, 30


class Terminal:
    """`optiq-chat` on a pseudo-terminal that is its controlling terminal, as in an SSH session.

    A thread drains the output, so the TUI never blocks writing to a full terminal.
    """

    def __init__(self, home: Path) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", LINES, COLUMNS, 0, 0))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "optiq_tui"], stdin=slave, stdout=slave, stderr=slave,
            env=engine_env(OPTIQ_HOME=str(home), TERM="xterm-256color"),
            # A new session whose controlling terminal is this pty (after setsid, before exec):
            # closing the master then hangs up that session, as sshd's exit does.
            start_new_session=True, preexec_fn=lambda: at_a_terminal() or fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self._chunks: list[bytes] = []
        self._stop = threading.Event()
        self._drain = threading.Thread(target=self._read, daemon=True)
        self._drain.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: the TUI closed its side
                    return
                if not data:
                    return
                self._chunks.append(data)

    @property
    def output(self) -> bytes:
        return b"".join(self._chunks)

    def wait_for(self, text: bytes, after: int = 0, what: str = "") -> None:
        poll(lambda: text in self.output[after:] or self.proc.poll() is not None, 60, what or repr(text))
        assert self.proc.poll() is None, f"the TUI exited: {self.output[-2000:]!r}"

    def type(self, keys: str) -> int:
        """Send keys; returns how much output came before them (to look for what they bring)."""
        seen = len(self.output)
        os.write(self.master, keys.encode())
        return seen

    def hang_up(self) -> None:
        """Close the master side, as sshd does when the connection drops: the kernel sends SIGHUP."""
        self._stop.set()
        self._drain.join(5)
        os.close(self.master)
        self.master = -1

    def close(self) -> None:
        if self.master != -1:
            self.hang_up()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def quantize_jobs() -> list:
    from optiq_tui.server.process import connect

    client = connect()
    try:
        return [job for job in client.jobs() if job.kind == "quantize"]
    finally:
        client.close()


def test_a_hung_up_tui_leaves_its_quantize_running(optiq_home, tiny_llama_dir, tmp_path, monkeypatch):
    install_model(tiny_llama_dir, optiq_home, "tiny-llama")
    monkeypatch.delenv("OPTIQ_ENGINE")
    gate = tmp_path / "gate"
    engine = start_engine(optiq_home, "--idle-timeout", "0", gate=gate)
    terminal = Terminal(optiq_home)
    try:
        # The library lists the model once it has painted and scanned; then it has the keys.
        terminal.wait_for(b"tiny-llama", what="the library")
        terminal.wait_for(b"Start (ctrl+s)", after=terminal.type("q"), what="the quantize form")
        terminal.type("\x13")  # ctrl+s
        poll(lambda: quantize_jobs() and gate.with_name("gate.reached").exists(), 120,
             "the quantize to reach the gate")

        terminal.hang_up()
        poll(lambda: terminal.proc.poll() is not None, 30, "the TUI to exit on the hang-up")
        assert terminal.proc.returncode == -signal.SIGHUP
        [job] = quantize_jobs()
        assert job.state == "running"

        gate.touch()
        poll(lambda: quantize_jobs()[0].ended, 120, "the quantize to finish")
        [job] = quantize_jobs()
        assert job.state == "done", job.error
        assert (optiq_home / "models" / job.result["name"] / "config.json").is_file()
    finally:
        terminal.close()
        kill_engines(optiq_home, engine)
