"""A modal that picks one model of the library (chat: change model; compare: pick A/B)."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from optiq_tui.ui.format import human_bytes


def describe(info: Any) -> str:
    """'name  ·  quant  ·  size' for lists of models."""
    return f"{info.name}  ·  {info.quant}  ·  {human_bytes(info.size_bytes)}"


class ModelPickerModal(ModalScreen[Any]):
    """Lists the library's models (scanned off the UI thread); Enter picks, Esc cancels.

    Dismisses with the chosen ``ModelInfo``, or ``None``.
    """

    DEFAULT_CSS = """
    ModelPickerModal { align: center middle; }
    ModelPickerModal > Vertical { width: 90%; max-width: 100; height: 80%; border: thick $accent; background: $surface; padding: 0 1; }
    ModelPickerModal OptionList { height: 1fr; }
    ModelPickerModal .hint { color: $text-muted; }
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str = "Pick a model", models: list[Any] | None = None, exclude: Any = None) -> None:
        super().__init__()
        self._title = title
        self._models = models
        self._exclude = exclude

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(f"[b]{self._title}[/b]")
            yield OptionList(id="models")
            yield Label("Enter: pick · Esc: cancel", classes="hint")

    def on_mount(self) -> None:
        if self._models is not None:
            self._show(self._models)
            return
        self.query_one(OptionList).add_option(Option("scanning the library…", disabled=True))
        self._scan(self.app.settings.scan_hf_cache)

    @work(group="scan", exit_on_error=False)
    async def _scan(self, include_hf_cache: bool) -> None:
        from optiq_tui.library import catalog

        # Metadata only (no MLX, so not the engine's work), off the UI thread.
        try:
            found = await asyncio.to_thread(catalog.scan, include_hf_cache)
        except Exception as exc:  # noqa: BLE001 - shown in the list
            options = self.query_one(OptionList)
            options.clear_options()
            options.add_option(Option(f"could not list models: {exc}", disabled=True))
            return
        self._show(list(found.models))

    def _show(self, models: list[Any]) -> None:
        self._models = [m for m in models if self._exclude is None or m.path != self._exclude.path]
        options = self.query_one(OptionList)
        options.clear_options()
        if not self._models:
            other = " other" if self._exclude is not None else ""
            options.add_option(Option(f"no{other} models in the library", disabled=True))
            return
        options.add_options([Option(describe(m), id=str(i)) for i, m in enumerate(self._models)])
        options.highlighted = 0
        options.focus()

    @on(OptionList.OptionSelected)
    def _picked(self, event: OptionList.OptionSelected) -> None:
        assert self._models is not None
        self.dismiss(self._models[int(event.option.id)])

    def action_cancel(self) -> None:
        self.dismiss(None)
