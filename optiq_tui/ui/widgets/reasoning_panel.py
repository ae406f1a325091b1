"""The collapsible panel that holds a model's reasoning above its answer."""

from __future__ import annotations

from textual.widgets import Collapsible, Markdown
from textual.widgets.markdown import MarkdownStream


class ReasoningPanel(Collapsible):
    """Reasoning text streamed as Markdown, titled with its token count.

    Open while reasoning streams; the owner collapses it when the answer starts.
    """

    DEFAULT_CSS = """
    ReasoningPanel { border: none; padding: 0; margin: 0 0 0 0; background: transparent; }
    ReasoningPanel > Contents { padding: 0 0 0 2; }
    ReasoningPanel Markdown { color: $text-muted; margin: 0; padding: 0; background: transparent; }
    """

    def __init__(self, text: str = "", tokens: int = 0, *, streaming: bool = False, **kwargs) -> None:
        self.tokens = tokens
        self.streaming = streaming
        self._markdown = Markdown(text, classes="reasoning-text")
        self._stream: MarkdownStream | None = None
        super().__init__(self._markdown, title=self._title_text(), collapsed=not streaming, **kwargs)

    def _title_text(self) -> str:
        verb = "Reasoning…" if self.streaming else "Reasoning"
        unit = "token" if self.tokens == 1 else "tokens"
        return f"{verb} · {self.tokens} {unit}"

    @property
    def text(self) -> str:
        return self._markdown.source

    async def append(self, text: str, tokens: int) -> None:
        """Add streamed reasoning (``tokens`` events' worth) and refresh the title."""
        if self._stream is None:
            self._stream = Markdown.get_stream(self._markdown)
        await self._stream.write(text)
        self.tokens += tokens
        self.title = self._title_text()

    async def finish(self) -> None:
        """Flush the stream and show the final title."""
        if self._stream is not None:
            await self._stream.stop()
            self._stream = None
        self.streaming = False
        self.title = self._title_text()
