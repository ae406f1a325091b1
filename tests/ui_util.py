"""Helpers for driving the app through Textual's Pilot: poll for a condition, never sleep."""

from __future__ import annotations

import shutil
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


def screen_text(app) -> str:
    """The current screen as plain text, one line per terminal row (no colours)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip).rstrip() for strip in strips)
