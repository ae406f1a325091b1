"""The collapsible panel that holds a model's reasoning above its answer."""

from __future__ import annotations

from textual.widgets import Collapsible

from optiq_tui.ui.widgets.streamed_markdown import StreamedMarkdown


class ReasoningPanel(Collapsible):
    """Reasoning text streamed as Markdown, titled with its token count.

    Open while reasoning streams; the owner collapses it when the answer starts.
    """

    DEFAULT_CSS = """
    ReasoningPanel { border: none; padding: 0; margin: 0 0 0 0; background: transparent; }
    ReasoningPanel > Contents { padding: 0 0 0 2; }
    ReasoningPanel StreamedMarkdown { color: $text-muted; }
    """

    def __init__(self, text: str = "", tokens: int = 0, *, streaming: bool = False, **kwargs) -> None:
        self.tokens = tokens
        self.streaming = streaming
        self._markdown = StreamedMarkdown(text, classes="reasoning-text")
        super().__init__(self._markdown, title=self._title_text(), collapsed=not streaming, **kwargs)

    def _title_text(self) -> str:
        verb = "Reasoning…" if self.streaming else "Reasoning"
        unit = "token" if self.tokens == 1 else "tokens"
        return f"{verb} · {self.tokens} {unit}"

    @property
    def text(self) -> str:
        return self._markdown.text

    async def append(self, text: str, tokens: int) -> None:
        """Add streamed reasoning (``tokens`` events' worth) and refresh the title."""
        await self._markdown.write(text)
        self.tokens += tokens
        self.title = self._title_text()

    async def finish(self) -> None:
        """Show the final title; the text is complete."""
        self._markdown.end_stream()
        self.streaming = False
        self.title = self._title_text()
