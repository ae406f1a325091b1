"""About and diagnostics: which engine this TUI is on, and what it runs on (measured by the engine)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Header, Static

from optiq_tui import __version__
from optiq_tui.settings import paths
from optiq_tui.ui.format import human_bytes
from optiq_tui.engine.jobs import JobInfo
from optiq_tui.progress import OptiqError
from optiq_tui.ui.screens.base import JobScreen
from optiq_tui.ui.widgets.model_details import display_path


def _value(key: str, value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) and "bytes" in key:
        return human_bytes(value)
    if isinstance(value, (list, tuple)):
        return "\n".join(str(v) for v in value) or "none"
    return "?" if value is None else str(value)


def api_text(in_process: bool) -> str:
    """Where an OpenAI client reaches this engine, and with which key (read from the engine's record)."""
    from optiq_tui.server import state

    record = None if in_process else state.read_record()
    if record is None:
        return "not served (in-process engine)"
    key = f"key {state.api_key()} ({state.api_key_file()})" if record.key_required else "no key (loopback only)"
    return f"{record.address}/v1 · {key}"


def about_table(diag: Any | None, engine: str = "", api: str = "") -> Table:
    """Version and folders, then the Diagnostics dataclass (nested dicts become indented rows)."""
    p = paths()
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row(Text("optiq-chat", style="bold underline"), __version__)
    table.add_row("models", display_path(p.models))
    table.add_row("conversations", display_path(p.conversations))
    table.add_row("exports", display_path(p.exports))  # where every export dialog writes by default
    table.add_row("settings", display_path(p.settings_file))
    table.add_row("", "")
    table.add_row(Text("engine", style="bold underline"), engine or "connecting…")
    if api:
        table.add_row("OpenAI API", api)
    if diag is None:
        table.add_row("", Text("measuring…", style="italic"))
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


class AboutScreen(JobScreen):
    """Version, folders and engine diagnostics (``doctor()``)."""

    BINDINGS = [Binding("escape,f1,q", "app.pop_screen", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.diagnostics: dict[str, Any] | None = None
        self.engine_text = ""
        self.api_text = ""

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="about-body"):
            yield Static(about_table(None), id="diagnostics")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "about"
        self.start_job("doctor")

    async def job_started(self, job: JobInfo) -> None:
        self.engine_text = await self.app.engine_text()
        self.api_text = await asyncio.to_thread(api_text, self.app.in_process)
        self._show()

    async def job_done(self, job: JobInfo) -> None:
        self.diagnostics = job.result
        self._show()

    async def job_failed(self, job: JobInfo) -> None:
        self.query_one("#diagnostics", Static).update(Text(f"Diagnostics failed: {job.error}"))
        self.app.show_error("Diagnostics failed", OptiqError(job.error or "failed"), "")

    def _show(self) -> None:
        self.query_one("#diagnostics", Static).update(about_table(self.diagnostics, self.engine_text, self.api_text))
