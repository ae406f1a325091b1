"""About and diagnostics: what the engine runs on, measured on the engine thread."""

from __future__ import annotations

import dataclasses
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from optiq_tui import __version__
from optiq_tui.settings import paths
from optiq_tui.ui.format import human_bytes
from optiq_tui.ui.messages import JobFailed, JobFinished
from optiq_tui.ui.widgets.model_details import display_path


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and "bytes" in key:
        return human_bytes(value)
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value) or "none"
    return "?" if value is None else str(value)


def about_table(diag: Any | None) -> Table:
    """Version and folders, then the Diagnostics dataclass (nested dicts become indented rows)."""
    p = paths()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row(Text("optiq-chat", style="bold underline"), __version__)
    table.add_row("models", display_path(p.models))
    table.add_row("conversations", display_path(p.conversations))
    table.add_row("settings", display_path(p.settings_file))
    table.add_row("", "")
    pending = Text("measuring…", style="italic")
    table.add_row(Text("engine", style="bold underline"), "" if diag is not None else pending)
    if diag is None:
        return table
    items = dataclasses.asdict(diag) if dataclasses.is_dataclass(diag) else dict(diag)
    for key, value in items.items():
        label = key.removesuffix("_bytes").replace("_", " ")
        if isinstance(value, dict):
            table.add_row(label, "")
            for sub, subvalue in value.items():
                table.add_row(f"  {sub}", _value(str(sub), subvalue))
        else:
            table.add_row(label, _value(key, value))
    return table


class AboutScreen(Screen):
    """Version, folders and engine diagnostics (``doctor()``)."""

    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.diagnostics: Any = None

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="about-body"):
            yield Static(about_table(None), id="diagnostics")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "about"

        def doctor() -> Any:
            # MLX and friends are imported here, on the engine thread, not at first paint.
            from optiq_tui.engine.diagnostics import doctor as run_doctor

            return run_doctor()

        self._job = self.app.bridge.submit_call(self, doctor, name="doctor")

    def on_job_finished(self, message: JobFinished) -> None:
        if message.job_id == self._job.id:
            self.diagnostics = message.result
            self.query_one("#diagnostics", Static).update(about_table(message.result))

    def on_job_failed(self, message: JobFailed) -> None:
        if message.job_id == self._job.id:
            self.query_one("#diagnostics", Static).update(Text(f"Diagnostics failed: {message.error}"))
            self.app.show_error("Diagnostics failed", message.error, message.details)
