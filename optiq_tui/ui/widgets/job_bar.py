"""One line under the library: the running download or import, its progress, how to stop it."""

from __future__ import annotations

from time import monotonic
from typing import Any

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar

from optiq_tui.progress import Log, Progress
from optiq_tui.ui.format import human_bytes


def describe(title: str, event: Progress, rate: float | None = None) -> str:
    """'Downloading x · 41.2 MB of 108 MB, 3.1 MB/s' for byte progress (``rate`` in bytes/s),
    else the event's message."""
    if event.unit == "B":
        # Byte counts say more than the file or tensor name a byte-level event carries.
        amount = human_bytes(event.done) + (f" of {human_bytes(event.total)}" if event.total else "")
        speed = f", {human_bytes(rate)}/s" if rate else ""
        return f"{title} · {amount}{speed}"
    return f"{title} · {event.message or event.stage}"


class ByteRate:
    """Bytes per second of one stage's byte progress, from its first event on."""

    def __init__(self) -> None:
        self._start: tuple[str, float, float] | None = None  # stage, time, bytes

    def update(self, event: Progress) -> float | None:
        now = monotonic()
        if self._start is None or self._start[0] != event.stage or event.done < self._start[2]:
            self._start = (event.stage, now, event.done)
            return None
        _, t0, done0 = self._start
        # Under a second the figure jumps about too much to read.
        return (event.done - done0) / (now - t0) if now - t0 >= 1.0 else None


class JobBar(Horizontal):
    """Hidden until :meth:`start`; :meth:`show` takes the job's Progress and Log events."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.title = ""
        self._rate = ByteRate()

    def compose(self) -> ComposeResult:
        yield Label("", id="job-label")
        # The label says the bytes and speed: no room at 80 columns for an ETA as well.
        yield ProgressBar(id="job-progress", show_eta=False)
        yield Label("esc cancels", id="job-hint")

    def on_mount(self) -> None:
        self.stop()

    def start(self, title: str) -> None:
        self.title = title
        self._rate = ByteRate()
        self.query_one("#job-label", Label).update(f"{title}…")
        self.query_one(ProgressBar).update(total=None, progress=0)
        self._show_percentage(False)
        self.display = True

    def _show_percentage(self, shown: bool) -> None:
        # "--%" while the total is unknown says nothing; byte progress says "x of y" in the label.
        self.query_one("#job-progress #percentage").display = shown

    def show(self, event: Any) -> None:
        if isinstance(event, Progress):
            self.query_one(ProgressBar).update(total=event.total, progress=event.done)
            self._show_percentage(bool(event.total) and event.unit != "B")
            rate = self._rate.update(event) if event.unit == "B" else None
            self.query_one("#job-label", Label).update(describe(self.title, event, rate))
        elif isinstance(event, Log):
            self.query_one("#job-label", Label).update(f"{self.title} · {event.message}")

    def cancelling(self) -> None:
        self.query_one("#job-label", Label).update(f"{self.title} · cancelling…")

    def stop(self) -> None:
        # A hidden indeterminate bar still animates, 15 timer ticks a second on every screen
        # of the app (the library stays under them all): a full bar does not.
        self.query_one(ProgressBar).update(total=1, progress=1)
        self.display = False
