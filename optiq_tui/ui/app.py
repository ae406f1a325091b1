"""The Textual application: the library as home screen, attached to one engine.

Paint first, connect after: the library lists models from their metadata
while a worker connects to the engine (the running engine process, a new
background one, or in-process with ``OPTIQ_ENGINE=in-process``). Screens
``await self.app.client()``; the engine's running jobs are shown on attach
(a quantize re-opens its progress view), since jobs belong to the engine.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import os
import traceback
from functools import partial
from typing import Iterable

from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from optiq_tui.engine.aclient import AsyncEngine
from optiq_tui.engine.client import InProcessClient, engine_line
from optiq_tui.progress import OptiqError
from optiq_tui.settings import Settings
from optiq_tui.ui.screens.library import LibraryScreen
from optiq_tui.ui.screens.modals import ErrorModal


# How often the status line asks the engine process how it is (uptime, running jobs).
ENGINE_LINE_S = 30.0
# How long quitting waits for a cancelled job of an in-process engine to tidy up.
QUIT_WAIT_S = 30.0


def error_details(error: BaseException) -> str:
    """What the error modal shows under the message: the cause chain or the traceback."""
    if isinstance(error, OptiqError):
        cause = error.__cause__ or error.__context__
        if cause is None:
            return ""
        return "".join(traceback.format_exception_only(type(cause), cause)).strip()
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()


def _settle_gc() -> None:
    """After the first frame: freeze what startup made (see on_mount) and let the GC run again
    (``optiq-chat`` starts with it off, cli.main)."""
    gc.freeze()
    gc.enable()


class OptiqApp(App[int]):
    """optiq-chat: keep, quantize, chat with and compare local MLX models."""

    CSS_PATH = "app.tcss"
    TITLE = "optiq-chat"
    BINDINGS = [
        Binding("f1", "about", "About", show=False),
        Binding("ctrl+q", "quit", "Quit", show=False, priority=True),
    ]

    def __init__(self, *, settings: Settings | None = None) -> None:
        super().__init__()
        self.settings = settings or Settings.load()
        self.library = LibraryScreen()
        self.engine: AsyncEngine | None = None
        self._engine_ready = asyncio.Event()
        self.engine_error: BaseException | None = None

    async def client(self) -> AsyncEngine:
        """The engine client, once connected (raises what connecting raised)."""
        await self._engine_ready.wait()
        if self.engine is None:
            raise self.engine_error or OptiqError("no engine")
        return self.engine

    @property
    def in_process(self) -> bool:
        return self.engine is not None and isinstance(self.engine.client, InProcessClient)

    async def engine_text(self) -> str:
        """Which engine this TUI is on: "engine pid N on ADDRESS, up 2 h, 1 job running" or "in-process"."""
        engine = await self.client()
        if self.in_process:
            return "in-process engine"
        return engine_line(await engine.status())

    @work(exclusive=True, group="engine", exit_on_error=False)
    async def _connect(self) -> None:
        from optiq_tui.server.process import open_client

        try:
            engine = AsyncEngine(await asyncio.to_thread(open_client))
            # Listed before any screen can submit: a job this TUI starts is not one to re-open.
            running = [job for job in await engine.jobs() if not job.ended]
        except Exception as exc:  # noqa: BLE001 - shown to the user; the library still works
            self.engine_error = exc
            self._engine_ready.set()
            self.library.engine_changed(f"no engine: {exc}")
            return
        self.engine = engine
        self._engine_ready.set()
        self.library.engine_changed(await self.engine_text())
        self.library.attach_running_jobs(running)
        if not self.in_process:
            # Its uptime and running jobs change: the status line follows them.
            self.set_interval(ENGINE_LINE_S, self._refresh_engine_line)

    @work(exclusive=True, group="engine-line", exit_on_error=False)
    async def _refresh_engine_line(self) -> None:
        try:
            text = await self.engine_text()
        except Exception as exc:  # noqa: BLE001 - said on the status line; jobs report their own errors
            text = f"engine not answering ({exc})"
        self.library.engine_changed(text)

    def get_default_screen(self) -> Screen:
        return self.library

    def on_mount(self) -> None:
        if self.settings.theme in self.available_themes:
            self.theme = self.settings.theme
        # The objects of startup (Textual, Rich, the first screen) live as long as the app:
        # frozen out of the garbage collector, its full passes during a fast stream went
        # from ~110 ms to ~35 ms of UI time (bench_chat --ui-only; they were the slowest frames).
        self.call_after_refresh(_settle_gc)
        # After the first frame: starting an engine process takes seconds, painting must not wait.
        self.call_after_refresh(self._connect)

    def watch_theme(self, theme: str) -> None:
        # Remember a theme picked from the palette for the next start.
        if getattr(self, "settings", None) is not None and theme != self.settings.theme:
            self.settings.theme = theme
            try:
                self.settings.save()
            except OSError as exc:
                self.notify(f"Could not save the theme: {exc}", severity="warning")

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        # Every key of the screen is also a command, so none is lost when the footer is too narrow.
        for active in screen.active_bindings.values():
            binding = active.binding
            if binding.description and active.enabled and binding.action not in ("quit", "command_palette"):
                yield SystemCommand(
                    binding.description,
                    f"{self.get_key_display(binding)} · {binding.tooltip or binding.description}",
                    partial(self.run_action, binding.action, active.node),
                )
        yield SystemCommand(
            "About and diagnostics",
            "Backend, BLAS, memory and versions (F1)",
            self.action_about,
        )

    def copy_to_clipboard(self, text: str) -> None:
        """OSC 52, which reaches the local clipboard over SSH; inside tmux, wrapped to pass through it."""
        self._clipboard = text
        if self._driver is None:
            return
        sequence = f"\x1b]52;c;{base64.b64encode(text.encode()).decode()}\a"
        if os.environ.get("TMUX"):
            sequence = "\x1bPtmux;" + sequence.replace("\x1b", "\x1b\x1b") + "\x1b\\"
        self._driver.write(sequence)

    def action_about(self) -> None:
        from optiq_tui.ui.screens.about import AboutScreen

        if not isinstance(self.screen, AboutScreen):
            self.push_screen(AboutScreen())

    def show_error(self, title: str, error: BaseException, details: str | None = None) -> None:
        """Open the error modal for ``error`` (an OptiqError's text is shown as is)."""
        if isinstance(error, OptiqError):
            message = str(error)
        else:
            # Not a problem the user caused: name it as a bug, the traceback goes below.
            message = f"Unexpected error (a bug in optiq-chat): {type(error).__name__}: {error}"
        self.push_screen(ErrorModal(title, message, error_details(error) if details is None else details))

    async def action_quit(self) -> None:
        # An engine process keeps its jobs (they are its, not this TUI's); one in this process
        # lets the running job see its cancel and clean up, so nothing half-made is left.
        if self.in_process and self.engine.client.service.busy:
            self.notify("Stopping the running job first…", timeout=30)
            await asyncio.to_thread(self._close, QUIT_WAIT_S)
        self.exit(0)

    def _close(self, timeout: float = 5.0) -> None:
        if self.in_process:
            self.engine.client.service.close(timeout)
        elif self.engine is not None:
            self.engine.client.close()  # the engine process and its jobs go on

    def on_unmount(self) -> None:
        self._close()


def run_app() -> int:
    """Open the app in this terminal; returns the exit code."""
    app = OptiqApp()
    result = app.run()
    return int(result or app.return_code or 0)
