"""Helpers for driving the app through Textual's Pilot: poll for a condition, never sleep."""

from __future__ import annotations

import functools
import shutil
import threading
import time
from pathlib import Path
from typing import Callable

from textual.pilot import Pilot


async def wait_until(pilot: Pilot, predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    """Let the app run until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await pilot.pause(0.02)


def install_model(source: Path, home: Path, name: str) -> Path:
    """Copy a built model folder into ``home``'s library as ``name``."""
    target = home / "models" / name
    shutil.copytree(source, target)
    return target


def library_ready(app) -> bool:
    """The library screen has finished its first catalog scan."""
    return getattr(app.library, "catalog", None) is not None


class JobGate:
    """Holds one engine job at its first event matching ``when`` until the test opens it.

    A test of cancel or of "while it runs" must not race the job: on a fast BLAS the
    tiny fixtures finish before a key press arrives. The job waits inside ``emit``,
    on the engine's thread, so nothing it does next can happen before :meth:`open`.
    """

    def __init__(self, when: Callable[[object], bool]) -> None:
        self.when = when
        self.reached = threading.Event()
        self.cancel_event: threading.Event | None = None  # the gated job's cancel flag, once it runs
        self._open = threading.Event()

    def open(self) -> None:
        self._open.set()

    def cancel_requested(self) -> bool:
        return self.cancel_event is not None and self.cancel_event.is_set()

    def wrap(self, task):
        @functools.wraps(task)  # the engine checks arguments against the task's signature
        def gated_task(ctx, emit, cancel, **args):
            if self.cancel_event is not None:
                return task(ctx, emit, cancel, **args)  # only the first job of the kind is held
            self.cancel_event = cancel

            def gated_emit(event):
                emit(event)
                if not self.reached.is_set() and self.when(event):
                    self.reached.set()
                    # Bounded, so a failed test cannot leave the engine thread stuck.
                    self._open.wait(120)

            return task(ctx, gated_emit, cancel, **args)

        return gated_task


def hold_job(monkeypatch, kind: str, when: Callable[[object], bool] = lambda _event: True) -> JobGate:
    """Gate the next in-process engine job of ``kind`` (see :class:`JobGate`)."""
    from optiq_tui.engine import service

    gate = JobGate(when)
    task, thread = service.KINDS[kind]
    monkeypatch.setitem(service.KINDS, kind, (gate.wrap(task), thread))
    return gate


def screen_text(app) -> str:
    """The current screen as plain text, one line per terminal row (no colours)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip).rstrip() for strip in strips)
