"""The home screen: every model on the machine, and every action on them."""

from __future__ import annotations

import traceback
from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Input, Static

from optiq_tui.ui.messages import CatalogScanFailed, CatalogScanned
from optiq_tui.ui.screens.base import JobScreen
from optiq_tui.ui.screens.library.commands import NEEDS_MODEL, ACTIONS, WELCOME, LibraryCommands
from optiq_tui.ui.screens.library.jobs import LibraryJobs
from optiq_tui.ui.screens.modals import TextModal
from optiq_tui.ui.widgets.job_bar import JobBar
from optiq_tui.ui.widgets.model_details import ModelDetails
from optiq_tui.ui.widgets.model_table import HEADERS, ModelTable

if TYPE_CHECKING:
    from optiq_tui.library.catalog import ModelInfo

LOADING_DELAY_S = 0.3


class LibraryScreen(LibraryJobs, JobScreen):
    """Models table, filter, details panel, and a bar for the running download/import."""

    COMMANDS = {LibraryCommands}
    AUTO_FOCUS = "#models"
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        Binding("enter", "chat", "Chat", key_display="⏎"),
        Binding("q", "quantize", "Quantize"),
        Binding("c", "compare", "Compare"),
        Binding("a", "mark('A')", "Mark A", show=False),
        Binding("b", "mark('B')", "Mark B", show=False),
        Binding("e", "eval", "Eval", show=False),
        Binding("d", "download", "Download"),
        Binding("i", "import_gguf", "Import"),
        Binding("g", "demo", "Demo model", show=False),
        Binding("delete,backspace", "delete", "Delete", key_display="del"),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("s", "cycle_sort", "Sort", show=False),
        Binding("slash", "focus_filter", "Filter", show=False),
        Binding("escape", "escape", "Cancel", show=False),
        Binding("question_mark", "help", "Help"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.catalog: Any = None
        self.engine_text = ""  # which engine the app is on, once connected

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="library-body"):
            with Vertical(id="library-main"):
                yield Input(placeholder="/ to filter by name, arch, quantization…", id="filter", compact=True)
                yield ModelTable(id="models")
                yield Static(Text.from_markup(WELCOME), id="welcome")
            yield ModelDetails(id="details")
        yield JobBar(id="job-bar")
        yield Static("", id="library-status")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "library"
        self.query_one("#welcome").display = False
        # Scan after the first frame: the scan thread would otherwise compete with
        # it for the GIL. A scan usually ends in a few ms, so the spinner shows only
        # if it does not, which keeps the LoadingIndicator off the first frame too.
        self.call_after_refresh(self.refresh_catalog)
        self._loading_timer = self.set_timer(
            LOADING_DELAY_S, lambda: setattr(self.query_one(ModelTable), "loading", True)
        )

    # -- catalog -------------------------------------------------------------

    def refresh_catalog(self, highlight: str | None = None) -> None:
        """Rescan models off the UI thread; ``highlight`` (name or path) gets the cursor."""
        self._scan(highlight, self.app.settings.scan_hf_cache)

    @work(thread=True, exclusive=True, group="scan")
    def _scan(self, highlight: str | None, include_hf_cache: bool) -> None:
        # Pure metadata (config.json, safetensors headers): no MLX, so not the engine thread.
        try:
            from optiq_tui.library import catalog

            result = catalog.scan(include_hf_cache=include_hf_cache)
        except Exception as exc:  # noqa: BLE001 - shown to the user
            self.post_message(CatalogScanFailed(exc, traceback.format_exc()))
            return
        self.post_message(CatalogScanned(result, highlight))

    def on_resize(self) -> None:
        narrow = self.size.width < 100
        # Wide, the details panel (38 columns) sits beside the table.
        self.query_one(ModelTable).set_width(self.size.width - (0 if self.size.width < 110 else 38), narrow)

    def on_catalog_scanned(self, message: CatalogScanned) -> None:
        self.catalog = message.catalog
        self._loading_timer.stop()
        table = self.query_one(ModelTable)
        table.loading = False
        table.set_models(self.catalog.models, highlight=message.highlight)
        empty = not self.catalog.models
        self.query_one("#welcome").display = empty
        table.display = not empty
        self.query_one("#filter").display = not empty
        self.query_one("#details").display = not empty
        self.set_class(not empty, "-has-models")
        if not empty and not self.query_one("#filter", Input).has_focus:
            table.focus()
        self._show_details()
        self._update_status()
        self.refresh_bindings()

    def on_catalog_scan_failed(self, message: CatalogScanFailed) -> None:
        self._loading_timer.stop()
        self.query_one(ModelTable).loading = False
        self.app.show_error("Could not list the models", message.error, message.details)

    def _update_status(self) -> None:
        table = self.query_one(ModelTable)
        parts = []
        if self.catalog is not None:
            total = len(self.catalog.models)
            shown = len(table.shown)
            parts.append(f"{total} model{'' if total == 1 else 's'}" + (f" ({shown} shown)" if shown != total else ""))
            if self.catalog.skipped:
                parts.append(f"{len(self.catalog.skipped)} skipped folders (? for why)")
        parts.append(f"sort: {HEADERS[table.sort_key]} {'▼' if table.sort_reverse else '▲'}")
        for letter in ("A", "B"):
            marked = table.marked(letter)
            if marked is not None:
                parts.append(f"{letter}: {marked.name}")
        if self.engine_text:
            parts.append(self.engine_text)
        self.query_one("#library-status", Static).update(" · ".join(parts))

    def engine_changed(self, text: str) -> None:
        """The app connected to an engine (or could not): the status line says which."""
        self.engine_text = text
        if self.is_mounted:
            self._update_status()

    def _show_details(self) -> None:
        table = self.query_one(ModelTable)
        info = table.highlighted_model
        mark = None
        if info is not None:
            mark = next((k for k, v in table.marks.items() if v == str(info.path)), None)
        self.query_one(ModelDetails).show(info, mark)

    @on(DataTable.RowHighlighted, "#models")
    def _highlighted(self) -> None:
        self._show_details()

    @on(DataTable.RowSelected, "#models")
    def _selected(self) -> None:
        self.action_chat()

    @on(DataTable.HeaderSelected, "#models")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        self.query_one(ModelTable).sort_by(str(event.column_key.value))
        self._update_status()

    @on(Input.Changed, "#filter")
    def _filter(self, event: Input.Changed) -> None:
        self.query_one(ModelTable).set_filter(event.value)
        self._show_details()
        self._update_status()

    @on(Input.Submitted, "#filter")
    def _filter_done(self) -> None:
        self.query_one(ModelTable).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # With no models, hide what needs one so the footer shows what to do instead.
        if action in NEEDS_MODEL and self.catalog is not None and not self.catalog.models:
            return False
        return True

    def highlighted(self) -> ModelInfo | None:
        """The highlighted model, or None with a notice saying why nothing happens."""
        info = self.query_one(ModelTable).highlighted_model
        if info is None:
            self.notify("No model selected: get one first (g, d or i).", severity="warning")
        return info

    # -- actions: navigation -------------------------------------------------

    def open_screen(self, module: str, cls: str, *args: Any) -> None:
        """Push a screen from a module that may not be part of this build."""
        import importlib

        full = f"optiq_tui.ui.screens.{module}"
        try:
            screen_cls = getattr(importlib.import_module(full), cls)
        except ModuleNotFoundError as exc:
            if exc.name != full:
                raise
            self.notify(f"The {module} screen is not available in this build.", severity="warning")
            return
        self.app.push_screen(screen_cls(*args))

    def action_chat(self) -> None:
        info = self.highlighted()
        if info is not None:
            self.open_screen("chat", "ChatScreen", info)

    def action_compare(self) -> None:
        table = self.query_one(ModelTable)
        a, b = table.marked("A"), table.marked("B")
        if a is None and b is None:
            a = table.highlighted_model
        self.open_screen("compare", "CompareScreen", a, b)

    def action_eval(self) -> None:
        table = self.query_one(ModelTable)
        models = [m for m in (table.marked("A"), table.marked("B")) if m is not None]
        if not models:
            info = self.highlighted()
            if info is None:
                return
            models = [info]
        self.open_screen("eval", "EvalScreen", models)

    def action_quantize(self) -> None:
        info = self.highlighted()
        if info is not None:
            from optiq_tui.ui.screens.quantize import QuantizeScreen

            self.app.push_screen(QuantizeScreen(info))

    def action_mark(self, letter: str) -> None:
        table = self.query_one(ModelTable)
        if table.highlighted_model is None:
            return
        marked = table.toggle_mark(letter)
        self.notify(f"{letter}: {marked.name}" if marked else f"{letter} unmarked", timeout=2)
        self._show_details()
        self._update_status()

    def action_cycle_sort(self) -> None:
        self.query_one(ModelTable).cycle_sort()
        self._update_status()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_refresh(self) -> None:
        current = self.query_one(ModelTable).highlighted_model
        self.refresh_catalog(highlight=str(current.path) if current else None)

    def action_escape(self) -> None:
        filt = self.query_one("#filter", Input)
        if filt.has_focus or filt.value:
            filt.value = ""
            self.query_one(ModelTable).focus()
        elif self.job is not None:
            self.query_one(JobBar).cancelling()
            self.run_worker(self.cancel_job(), group="cancel")

    def action_help(self) -> None:
        lines = ["Keys", ""]
        lines += [f"  {keys:<7} {title}" for _, title, keys in ACTIONS]
        lines += ["  esc     Clear the filter, or cancel a download or import"]
        lines += ["  F1      About and diagnostics", "  ctrl+p  All commands", "  ctrl+q  Quit"]
        skipped = list(getattr(self.catalog, "skipped", []) or [])
        lines += ["", f"Skipped folders ({len(skipped)})", ""]
        lines += [f"  {s.path}\n      {s.reason}" for s in skipped] or ["  none"]
        self.app.push_screen(TextModal("Help", "\n".join(lines)))
