"""One line under the library: the running download or import, its progress, how to stop it."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from optiq_tui.progress import Log, Progress
from optiq_tui.ui.format import human_bytes


def describe(title: str, event: Progress) -> str:
    """'Downloading x · download 12.0 MB / 80.0 MB' for byte progress, else the event's message."""
    if event.unit == "B":
        # Byte counts say more than the file or tensor name a byte-level event carries.
        amount = human_bytes(event.done) + (f" / {human_bytes(event.total)}" if event.total else "")
        return f"{title} · {event.stage} {amount}"
    return f"{title} · {event.message or event.stage}"


class JobBar(Horizontal):
    """Hidden until :meth:`start`; :meth:`show` takes the job's Progress and Log events."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = ""

    def compose(self) -> ComposeResult:
        yield Label("", id="job-label")
        yield ProgressBar(id="job-progress", show_eta=True)
        yield Label("esc cancels", id="job-hint")

    def on_mount(self) -> None:
        self.display = False

    def start(self, title: str) -> None:
        self.title = title
        self.query_one("#job-label", Label).update(f"{title}…")
        self.query_one(ProgressBar).update(total=None, progress=0)
        self.display = True

    def show(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.query_one(ProgressBar).update(total=event.total, progress=event.done)
            self.query_one("#job-label", Label).update(describe(self.title, event))
        elif isinstance(event, Log):
            self.query_one("#job-label", Label).update(f"{self.title} · {event.message}")

    def cancelling(self) -> None:
        self.query_one("#job-label", Label).update(f"{self.title} · cancelling…")

    def stop(self) -> None:
        self.display = False
