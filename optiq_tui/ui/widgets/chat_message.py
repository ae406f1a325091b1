"""One message of a chat: who said it, the reasoning panel, the Markdown answer."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label

from optiq_tui.ui.widgets.reasoning_panel import ReasoningPanel
from optiq_tui.ui.widgets.stream_batch import Segment
from optiq_tui.ui.widgets.streamed_markdown import StreamedMarkdown

FINISH_NOTES = {
    "cancelled": "stopped",
    "length": "cut off at the token limit",
    "error": "failed",
}


class ChatMessage(Vertical):
    """A user or assistant message; assistant messages can stream.

    Streaming goes through :class:`StreamedMarkdown`, which re-renders only the
    open block at the end of the text; the reasoning panel is created on the first
    reasoning text, open while it streams and collapsed when the answer starts.
    """

    DEFAULT_CSS = """
    ChatMessage { height: auto; margin: 0 0 1 0; padding: 0 1; }
    ChatMessage.user { background: $boost; }
    ChatMessage > .role { color: $accent; text-style: bold; }
    ChatMessage.user > .role { color: $secondary; }
    ChatMessage > StreamedMarkdown { margin: 0; padding: 0; }
    ChatMessage > .note { color: $warning; }
    """

    def __init__(
        self,
        role: str,
        text: str = "",
        *,
        label: str | None = None,
        reasoning: str = "",
        reasoning_tokens: int = 0,
        streaming: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(classes=role, **kwargs)
        self.role = role
        self.label = label or ("You" if role == "user" else "Assistant")
        self.streaming = streaming
        self.finish_reason: str | None = None
        self._answer = StreamedMarkdown(text, classes="answer")
        self._answering = False  # the answer's first text has arrived
        self._reasoning: ReasoningPanel | None = (
            ReasoningPanel(reasoning, reasoning_tokens) if reasoning else None
        )
        self._note = Label("", classes="note")
        self._note.display = False

    def compose(self) -> ComposeResult:
        yield Label(self.label, classes="role")
        if self._reasoning is not None:
            yield self._reasoning
        yield self._answer
        yield self._note

    @property
    def answer_text(self) -> str:
        return self._answer.text

    @property
    def reasoning_text(self) -> str:
        return self._reasoning.text if self._reasoning is not None else ""

    @property
    def reasoning_panel(self) -> ReasoningPanel | None:
        return self._reasoning

    async def apply(self, segments: list[Segment]) -> None:
        """Append a batch of streamed text, in order."""
        for seg in segments:
            if seg.kind == "reasoning":
                if self._reasoning is None:
                    self._reasoning = ReasoningPanel(streaming=True)
                    await self.mount(self._reasoning, before=self._answer)
                await self._reasoning.append(seg.text, seg.events)
            else:
                if not self._answering:
                    # The answer started: reasoning is done, fold it away.
                    self._answering = True
                    if self._reasoning is not None and self._reasoning.streaming:
                        await self._reasoning.finish()
                        self._reasoning.collapsed = True
                await self._answer.write(seg.text)

    async def finish(self, reason: str, error: str | None = None, reasoning_tokens: int = 0) -> None:
        """Flush the streams and note why generation ended when it was not a clean stop.

        ``reasoning_tokens`` (from the final stats) replaces the panel's count of
        streamed events, which can differ when a delta spans several tokens.
        """
        if self._reasoning is not None:
            if reasoning_tokens:
                self._reasoning.tokens = reasoning_tokens
            await self._reasoning.finish()
        self._answer.end_stream()
        self.streaming = False
        self.finish_reason = reason
        note = FINISH_NOTES.get(reason)
        if note:
            self._note.update(f"({note}{': ' + error if error else ''})")
            self._note.display = True
