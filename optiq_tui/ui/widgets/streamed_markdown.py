"""Markdown that streams in batches at a cost that does not grow with the text.

Textual's Markdown widget holds one widget per block, and every append lays
out all of them: a 2,000-token answer made each frame several times dearer
than the first. Here the text is shown as Rich Markdown in a few Static parts,
each rendered block by block (a block ends at a blank line outside a code
fence): a finished block is rendered once, and a frame re-renders only the
open block at the end of the text. Once the last part (the tail) is long, it
is kept as a finished part and a new tail starts.

A layout re-arranges the whole screen and, as the anchored transcript scrolls,
repaints all of it (measured on the 2-core dev machine: 10-20 ms of the UI
thread, against 2-4 ms to repaint the tail alone). So while text streams, the
tail keeps blank rows below its text, about ``RESERVE_S`` of the stream at its
recent rate: text fills them with repaints of the tail alone, and the screen
lays out and scrolls only when they run out. A slow stream reserves nothing and
scrolls line by line.
"""

from __future__ import annotations

import copy
from time import monotonic

from markdown_it import MarkdownIt
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markdown import Markdown as RichMarkdown
from rich.measure import Measurement
from rich.segment import Segment
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.geometry import Region
from textual.widget import Widget

# A tail this long becomes a finished part at its next layout (after a finished block).
FREEZE_CHARS = 2000
FENCES = ("```", "~~~")
# Blank rows kept below a streaming tail: about this much of the stream at its recent rate...
RESERVE_S = 0.6
# ...and at most this share of the screen's height, so the text stays near the bottom.
RESERVE_SCREEN_SHARE = 0.6

Lines = list[list[Segment]]

# Rich's Markdown builds a new MarkdownIt parser per document: 1.2 ms, against 0.04 ms to
# parse a 40-word block and 0.3 ms to render it. One parser, set up as Rich sets up its own.
_PARSER = MarkdownIt().enable("strikethrough").enable("table")
_EMPTY = RichMarkdown("")


def rich_markdown(text: str) -> RichMarkdown:
    """``RichMarkdown(text)`` with Rich's defaults, parsed by the shared parser."""
    document = copy.copy(_EMPTY)
    document.markup, document.parsed = text, _PARSER.parse(text)
    return document


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


def split_blocks(text: str, fenced: bool = False) -> list[str]:
    """``text`` cut at its blank lines outside code fences; the last item is the open block
    (possibly empty). ``fenced``: ``text`` starts inside a fence."""
    blocks, current, inside = [], "", fenced
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith(FENCES):
            inside = not inside
        if not inside and not line.strip():
            if current.strip():
                blocks.append(current)
            current = ""
        else:
            current += line
    return blocks + [current]


def reserve_rows(grown_rows: int, seconds: float, screen_rows: int) -> int:
    """Blank rows to keep below a tail whose text grew ``grown_rows`` in ``seconds``."""
    if seconds <= 0 or grown_rows <= 0:
        return 0
    return min(int(screen_rows * RESERVE_SCREEN_SHARE), int(grown_rows / seconds * RESERVE_S))


class BlockMarkdown:
    """A Rich renderable of Markdown blocks, one blank line between them.

    Finished blocks' lines come from ``cache`` (shared by the frames of one
    stream), so a frame renders only the open block; the result is memoised per
    width, as Textual asks a widget for its height and then its lines.
    """

    def __init__(self, blocks: list[str], cache: dict[tuple[int, str], Lines], *, last_open: bool) -> None:
        self.blocks = blocks
        self.cache = cache
        self.last_open = last_open
        self._lines: tuple[int, Lines] = (-1, [])
        self.open_row = 0  # the row the open block starts on, once rendered

    def lines(self, console: Console, options: ConsoleOptions) -> Lines:
        width = options.max_width
        options = options.reset_height()  # a height would pad every block to it
        if self._lines[0] == width:
            return self._lines[1]
        out: Lines = []
        for i, block in enumerate(self.blocks):
            if not block.strip():
                continue
            keep = not (self.last_open and i == len(self.blocks) - 1)
            lines = self.cache.get((width, block)) if keep else None
            if lines is None:
                lines = console.render_lines(rich_markdown(block), options, pad=True)
                while lines and all(not s.style and not s.text.strip() for s in lines[0]):
                    lines = lines[1:]  # lists and rules open with a blank line: one is enough
                if keep:
                    self.cache[(width, block)] = lines
            if out:
                out.append([])
            if not keep:
                self.open_row = len(out)
            out.extend(lines)
        if not self.last_open or not self.blocks[-1].strip():
            self.open_row = len(out)
        self._lines = (width, out)
        return out

    def rows(self, console: Console, options: ConsoleOptions) -> int:
        return len(self.lines(console, options))

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        new_line = Segment.line()
        for line in self.lines(console, options):
            yield from line
            yield new_line

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement(1, options.max_width)


class MarkdownPart(Widget):
    """One part of a StreamedMarkdown: a Rich renderable that can repaint some rows alone.

    Not a Static: a Static repaints all its rows on every update, and a streaming
    tail changes only those of its open block.
    """

    DEFAULT_CSS = "MarkdownPart { height: auto; }"

    def __init__(self, renderable: object = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self.renderable = renderable

    def render(self) -> object:
        return self.renderable

    def update(self, renderable: object, *, layout: bool = True) -> None:
        self.renderable = renderable
        self.refresh(layout=layout)

    def update_rows(self, renderable: object, first: int, end: int) -> None:
        """Show ``renderable``, whose rows before ``first`` and from ``end`` are unchanged."""
        self.renderable = renderable
        self.refresh(Region(0, first, self.size.width, max(1, end - first)))


class StreamedMarkdown(Vertical):
    """Markdown text that grows by :meth:`write`; ``text`` is all of it. Call :meth:`end_stream`
    when no more text will come (it drops the tail's blank rows)."""

    DEFAULT_CSS = """
    StreamedMarkdown { height: auto; }
    StreamedMarkdown > MarkdownPart.finished { margin-bottom: 1; }
    """

    def __init__(self, text: str = "", **kwargs) -> None:
        super().__init__(**kwargs)
        self._finished_text = ""
        self._fenced = False  # a code fence is open at the end of the finished parts
        self._tail_text = text
        self._tail = MarkdownPart(rich_markdown(text) if text.strip() else "")
        self._open_row = 0  # where the tail's open block starts: rows above it do not change
        self._cache: dict[tuple[int, str], Lines] = {}  # the tail's finished blocks, rendered
        self._rows = 0  # rows the tail's height holds (text and blank); 0: as tall as its text
        self._text_rows = 0  # rows of the tail's text, when measured
        self._grown_at = (0.0, 0)  # (when, rows of text) at the tail's last growth

    def compose(self) -> ComposeResult:
        yield self._tail

    @property
    def text(self) -> str:
        return self._finished_text + self._tail_text

    @property
    def parts(self) -> int:
        """How many parts show the text (for tests and benchmarks)."""
        return len(self.children)

    @property
    def reserved_rows(self) -> int:
        """Blank rows below the tail's text (for tests and benchmarks)."""
        return max(0, self._rows - self._text_rows) if self._rows else 0

    async def write(self, text: str) -> None:
        """Append ``text``: re-renders the tail's open block, lays out only when the tail outgrows
        its rows, and then starts a new tail after a long one."""
        self._tail_text += text
        visual = BlockMarkdown(split_blocks(self._tail_text, self._fenced), self._cache, last_open=True)
        before_rows = self._text_rows
        rows = self._text_rows = self._measure(visual)
        if rows and rows <= self._rows:
            # The text fits the rows the tail holds: repaint its open block's rows alone, no layout.
            self._tail.update_rows(visual, self._open_row, max(rows, before_rows))
            self._open_row = visual.open_row
            return
        # A layout is due: the moment to keep a long tail as a finished part.
        cut = split_point(self._tail_text, self._fenced) if len(self._tail_text) >= FREEZE_CHARS else 0
        if cut:
            await self._freeze(cut)
            visual = BlockMarkdown(split_blocks(self._tail_text, self._fenced), self._cache, last_open=True)
            rows = self._text_rows = self._measure(visual)
        if rows:
            now = monotonic()
            when, before = self._grown_at
            self._grown_at = (now, rows)
            extra = reserve_rows(rows - before, now - when, self.screen.size.height) if when else 0
            self._rows = rows + extra
            self._tail.styles.height = self._rows
        self._open_row = visual.open_row
        self._tail.update(visual)

    async def _freeze(self, cut: int) -> None:
        """Keep the tail's first ``cut`` characters as a finished part; the rest is a new tail."""
        finished = self._tail_text[:cut]
        # Its blocks are the ones the tail showed, already rendered.
        part = BlockMarkdown(split_blocks(finished, self._fenced), self._cache, last_open=False)
        self._tail.update(part)
        self._tail.add_class("finished")
        self._tail.styles.height = None  # back to the text's own height
        when, before = self._grown_at
        self._grown_at = (when, before - self._measure(part) - 1)  # its rows and bottom margin
        self._fenced = opens_fence(finished, self._fenced)
        self._finished_text += finished
        self._tail_text = self._tail_text[cut:]
        self._cache = {}
        self._rows = self._open_row = 0
        self._tail = MarkdownPart()
        await self.mount(self._tail)

    def end_stream(self) -> None:
        """No more text: the tail shows it as one Markdown document, as tall as it is."""
        self._rows = self._open_row = 0
        self._cache = {}
        self._tail.styles.height = None
        self._tail.update(rich_markdown(self._tail_text) if self._tail_text.strip() else "")

    def _measure(self, visual: BlockMarkdown) -> int:
        """Rows of ``visual`` at the tail's width; 0 before the first layout."""
        width = self.content_region.width  # the tail's too: it has no padding
        if not width or not self.is_attached:
            return 0
        options = self.app.console_options.update_width(width).update(highlight=False)
        return visual.rows(self.app.console, options)
