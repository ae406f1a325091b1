"""The stages of a long job, each with its state and elapsed time."""

from __future__ import annotations

import time
from dataclasses import dataclass

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from optiq_tui.ui.format import human_seconds

# state -> (icon, style); styles are terminal-neutral so they read in 256 colours.
ICONS = {
    "pending": ("·", "dim"),
    "running": ("▶", "bold"),
    "done": ("✓", "bold"),
    "skipped": ("–", "dim"),
    "failed": ("✗", "bold reverse"),
    "cancelled": ("✗", "dim"),
}
# Words a stage event may use for the same state.
ALIASES = {"started": "running", "start": "running", "finished": "done", "cached": "skipped"}


@dataclass
class StageState:
    state: str = "pending"
    started: float | None = None
    seconds: float | None = None
    note: str = ""


class StageList(Static):
    """Renders ``stages`` in order; call :meth:`set_state` as events arrive."""

    def __init__(self, stages: tuple[str, ...] | list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.stages = list(stages)
        self.states = {stage: StageState() for stage in self.stages}

    def on_mount(self) -> None:
        self.refresh_table()
        # Elapsed time of the running stage ticks while nothing else changes.
        self.set_interval(0.5, self._tick)

    def set_state(self, stage: str, state: str, seconds: float | None = None, note: str = "") -> None:
        state = ALIASES.get(state, state)
        if stage not in self.states:
            self.stages.append(stage)
            self.states[stage] = StageState()
        entry = self.states[stage]
        if state == "running" and entry.state != "running":
            entry.started = time.monotonic()
        entry.state = state
        if seconds is not None:
            entry.seconds = seconds
        elif state != "running" and entry.started is not None and entry.seconds is None:
            entry.seconds = time.monotonic() - entry.started
        if note:
            entry.note = note
        self.refresh_table()

    def stop_running(self, state: str, also: tuple[str, ...] = ()) -> None:
        """Mark whatever is running (and stages in any of ``also``) as ``state``."""
        for stage, entry in self.states.items():
            if entry.state == "running" or entry.state in also:
                self.set_state(stage, state)

    @property
    def running(self) -> str | None:
        return next((s for s in self.stages if self.states[s].state == "running"), None)

    def _tick(self) -> None:
        if self.running is not None:
            self.refresh_table()

    def refresh_table(self) -> None:
        table = Table.grid(padding=(0, 1))
        table.add_column(width=1)
        table.add_column()
        table.add_column(justify="right")
        table.add_column(style="dim")
        now = time.monotonic()
        for stage in self.stages:
            entry = self.states[stage]
            icon, style = ICONS.get(entry.state, ("?", ""))
            if entry.state == "running" and entry.started is not None:
                elapsed = human_seconds(now - entry.started)
            elif entry.state in ("pending", "skipped"):
                elapsed = ""
            else:
                elapsed = human_seconds(entry.seconds)
            name_style = "bold" if entry.state == "running" else ("dim" if entry.state == "pending" else "")
            table.add_row(Text(icon, style=style), Text(stage, style=name_style), elapsed, entry.note)
        self.update(table)
