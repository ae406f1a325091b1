"""One side of the compare screen: a model's transcript and its live stats."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Label

from optiq_tui.ui.widgets.chat_message import ChatMessage
from optiq_tui.ui.widgets.model_table import truncate_middle
from optiq_tui.ui.widgets.stats_line import StatsLine
from optiq_tui.ui.widgets.stream_batch import Batch


class CompareColumn(Vertical):
    """Header (model name, or Left/Right in blind mode), messages, stats line."""

    DEFAULT_CSS = """
    CompareColumn { width: 1fr; height: 1fr; border: round $primary 50%; }
    CompareColumn > .column-title { width: 1fr; text-style: bold; color: $accent; padding: 0 1; }
    CompareColumn > VerticalScroll { height: 1fr; }
    CompareColumn > StatsLine { height: auto; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self._title = title
        self._heading = Label(title, classes="column-title", markup=False)
        self.transcript = VerticalScroll(classes="transcript")
        self.stats = StatsLine("idle", memory=False)
        self.current: ChatMessage | None = None
        # Blind and not yet voted: speed and timings would tell the models apart.
        self.masked = False

    def compose(self) -> ComposeResult:
        yield self._heading
        yield self.transcript
        yield self.stats

    def set_title(self, title: str) -> None:
        """The column's heading on one line, cut in the middle (quants differ at the end)."""
        self._title = title
        width = self._heading.content_region.width
        self._heading.update(truncate_middle(title, width) if width > 0 else title)

    def on_resize(self) -> None:
        self.set_title(self._title)

    async def add_user(self, text: str) -> None:
        await self.transcript.mount(ChatMessage("user", text))

    async def start_answer(self, label: str) -> ChatMessage:
        """Mount an empty streaming assistant message and follow it."""
        self.current = ChatMessage("assistant", label=label, streaming=True)
        await self.transcript.mount(self.current)
        self.transcript.anchor()
        return self.current

    async def apply(self, batch: Batch) -> None:
        """Apply a drained batch to the streaming message and the stats line."""
        if self.current is None:
            return
        if batch.segments:
            await self.current.apply(batch.segments)
        if batch.stats is not None:
            if self.masked:
                self.stats.stats = batch.stats
            else:
                self.stats.show_stats(batch.stats, live=batch.finished is None)
        if batch.finished is not None:
            fin = batch.finished
            if self.masked:
                how = {"cancelled": "stopped", "error": "failed"}.get(fin.reason, "answered")
                self.stats.show_text(f"{how} · its figures show after your vote")
            await self.current.finish(fin.reason, fin.error, fin.stats.reasoning_tokens)

    def reveal(self) -> None:
        """Unmask: show the final figures kept while the column was blind."""
        self.masked = False
        if self.stats.stats is not None:
            self.stats.show_stats(self.stats.stats, live=False)

    async def clear(self) -> None:
        await self.transcript.remove_children()
        self.current = None
        self.stats.stats = None
        self.stats.show_text("idle")
