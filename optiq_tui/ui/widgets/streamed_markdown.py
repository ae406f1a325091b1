"""Markdown that streams in batches at a cost that does not grow with the text.

Textual's Markdown widget holds one widget per block, and every append lays
out all of them: a 2,000-token answer made each frame several times dearer
than the first. Here the text is shown as Rich Markdown in a few Static parts:
only the last part (the tail) is re-rendered as text arrives; once the tail
is long and a block has just ended, it is kept as a finished part, rendered
once, and a new tail starts.
"""

from __future__ import annotations

from rich.markdown import Markdown as RichMarkdown
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

# A tail this long is cut after its next finished block.
FREEZE_CHARS = 1200
FENCES = ("```", "~~~")


def split_point(text: str, fenced: bool) -> int:
    """Where ``text`` can be cut after a finished block (just past a blank line, outside a
    code fence), or 0. ``fenced``: ``text`` starts inside a fence."""
    cut, inside, pos = 0, fenced, 0
    for line in text.splitlines(keepends=True):
        pos += len(line)
        if line.lstrip().startswith(FENCES):
            inside = not inside
        elif not inside and not line.strip() and pos < len(text):
            cut = pos
    return cut


def opens_fence(text: str, fenced: bool) -> bool:
    """Whether a code fence is open after ``text`` (given whether one was open before it)."""
    for line in text.splitlines():
        if line.lstrip().startswith(FENCES):
            fenced = not fenced
    return fenced


def _render(text: str) -> RichMarkdown | str:
    return RichMarkdown(text) if text.strip() else ""


class StreamedMarkdown(Vertical):
    """Markdown text that grows by :meth:`write`; ``text`` is all of it."""

    DEFAULT_CSS = """
    StreamedMarkdown { height: auto; }
    StreamedMarkdown > Static { height: auto; }
    StreamedMarkdown > Static.finished { margin-bottom: 1; }
    """

    def __init__(self, text: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._finished_text = ""
        self._fenced = False  # a code fence is open at the end of the finished parts
        self._tail_text = text
        self._tail = Static(_render(text))

    def compose(self) -> ComposeResult:
        yield self._tail

    @property
    def text(self) -> str:
        return self._finished_text + self._tail_text

    @property
    def parts(self) -> int:
        """How many Static parts show the text (for tests and benchmarks)."""
        return len(self.children)

    async def write(self, text: str) -> None:
        """Append ``text``; re-renders only the tail, and starts a new tail after a long one."""
        # The whole tail is re-rendered anyway, so it may be cut anywhere in it (a blank
        # line can also span two writes).
        tail = self._tail_text + text
        cut = split_point(tail, self._fenced) if len(tail) >= FREEZE_CHARS else 0
        if not cut:
            self._tail_text = tail
            self._tail.update(_render(tail))
            return
        finished = tail[:cut]
        self._tail.update(_render(finished))
        self._tail.add_class("finished")
        self._fenced = opens_fence(finished, self._fenced)
        self._finished_text += finished
        self._tail_text = tail[cut:]
        self._tail = Static(_render(self._tail_text))
        await self.mount(self._tail)
