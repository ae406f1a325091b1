"""Saved conversations: list, reopen, rename, delete, export to Markdown."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Label
from textual.worker import Worker, WorkerState

from optiq_tui.ui.widgets.model_table import truncate_middle


class ConversationsScreen(Screen[str | None]):
    """Dismisses with the id of the conversation to reopen, or None."""

    DEFAULT_CSS = """
    ConversationsScreen #conv-title { height: 1; padding: 0 1; background: $panel; text-style: bold; width: 1fr; }
    ConversationsScreen DataTable { height: 1fr; }
    ConversationsScreen #conv-empty { padding: 1 2; color: $text-muted; }
    """

    BINDINGS = [
        Binding("enter", "open", "Open"),
        Binding("r", "rename", "Rename"),
        Binding("d", "delete", "Delete"),
        Binding("e", "export", "Export .md"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.conversations: list[Any] = []

    def compose(self) -> ComposeResult:
        yield Label("Conversations · Enter reopens, r renames, d deletes, e exports Markdown", id="conv-title")
        yield DataTable(id="conv-table", cursor_type="row", zebra_stripes=True)
        yield Label("No saved conversations yet.", id="conv-empty")
        yield Footer()

    @property
    def store(self) -> Any:
        from optiq_tui.engine.conversations import ConversationStore

        return ConversationStore()

    def on_mount(self) -> None:
        self.refresh_list()

    def refresh_list(self) -> None:
        self.conversations = list(self.store.list())
        table = self.query_one(DataTable)
        table.clear(columns=True)
        # Title and model share what the count and date leave, so the date stays whole at 80 columns;
        # a model's name is cut in the middle (quants differ at the end).
        cut = max(26, (self.app.size.width - 28) // 2)
        rows = []
        for c in self.conversations:
            title = c.title or "(untitled)"
            title = title if len(title) <= cut else title[: cut - 1] + "…"
            rows.append((title, truncate_middle(c.model, cut), str(c.n_messages), c.updated[:16].replace("T", " ")))
        # Every width given: DataTable sizes auto columns only when idle, after a first paint.
        for n, label in enumerate(("title", "model", "msgs", "updated")):
            table.add_column(label, width=max([len(label)] + [len(row[n]) for row in rows]))
        for c, row in zip(self.conversations, rows):
            table.add_row(*row, key=c.id)
        self.query_one("#conv-empty").display = not self.conversations
        table.focus()

    def _selected(self) -> Any | None:
        table = self.query_one(DataTable)
        if not self.conversations or table.cursor_row is None:
            return None
        return self.conversations[table.cursor_row]

    @on(DataTable.RowSelected)
    def _row_selected(self) -> None:
        self.action_open()

    def action_open(self) -> None:
        chosen = self._selected()
        if chosen is not None:
            self.dismiss(chosen.id)

    def action_back(self) -> None:
        self.dismiss(None)

    def action_rename(self) -> None:
        from optiq_tui.ui.screens.modals import InputModal

        chosen = self._selected()
        if chosen is None:
            return

        def renamed(title: str | None) -> None:
            if title:
                self.store.rename(chosen.id, title)
                self.refresh_list()

        self.app.push_screen(InputModal("Rename conversation", "New title:", value=chosen.title or ""), renamed)

    def action_delete(self) -> None:
        from optiq_tui.ui.screens.modals import ConfirmModal

        chosen = self._selected()
        if chosen is None:
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.store.delete(chosen.id)
                self.refresh_list()

        self.app.push_screen(
            ConfirmModal("Delete conversation", f"Delete “{chosen.title}” for good?", yes="Delete"), answered
        )

    def action_export(self) -> None:
        from optiq_tui.ui.screens.modals import export_dialog

        chosen = self._selected()
        if chosen is None:
            return
        store = self.store
        default = store.default_export_path(chosen.id)

        def chosen_path(path: str | None) -> None:
            if path:
                self._export(store, chosen.id, path)

        self.app.push_screen(export_dialog("Export to Markdown", "the conversation", default), chosen_path)

    @work(group="export", exit_on_error=False)
    async def _export(self, store: Any, conversation_id: str, path: str) -> None:
        self.notify(f"Saved {await asyncio.to_thread(store.export_markdown, conversation_id, path)}")

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.group == "export":
            self.app.show_error("Export failed", event.worker.error)
