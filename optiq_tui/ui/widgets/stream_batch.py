"""Coalesce a generation's token events between the engine thread and the UI.

A fast model emits 1000+ events a second; posting one Textual message per
token would flood the message queue and re-render Markdown per token. The
engine thread pushes events here instead (thread-safe, cheap), and the screen
drains the buffer on a timer, applying each batch as one Markdown append.
Stats coalesce to the latest figures. :class:`FlushPacer` stretches the timer
when the frames get expensive, so the UI never takes much CPU from the engine.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from optiq_tui.engine.events import AnswerDelta, Finished, GenStats, ReasoningDelta, StatsUpdate

# Textual's own MarkdownStream coalesces too, but only once fragments reach the
# event loop; the win here is never queueing per-token messages at all. Ten
# updates a second read as live text (a demo-speed model adds a token or two
# each) and cost fewer timer wake-ups than 25.
FLUSH_INTERVAL_S = 0.1
# The slowest the stream may update, reached only when frames are expensive
# (hundreds of tokens/s on a loaded machine, where every frame lays out the screen).
MAX_FLUSH_INTERVAL_S = 1.0
# Share of wall time the UI thread may spend while a stream runs. A frame that
# repaints only the answer's tail measured 2-4 ms of the UI thread on the 2-core
# dev machine, one that lays out and repaints the screen 10-20 ms (load-dependent).
# 2.5%, not 5%: the stream's first second (the first text's layout, flushes every
# 0.1-0.4 s while the pacer steps up) takes a replayed 500 tok/s stream's share
# about a point higher (bench_chat --ui-only: 3.2-4.0% at 1.6-2.0 updates/s, load 10-13).
UI_CPU_BUDGET = 0.025
# The pacer steers on the UI thread's share over about this much of the stream...
PACER_WINDOW_S = 1.0
# ...changing the delay by at most this factor a flush.
PACER_MAX_STEP = 2.0

# While tokens stream, the UI thread's rendering and the engine thread's token
# loop share the GIL. Python hands it over every 5 ms by default, so each
# token could wait that long behind a repaint; 0.5 ms keeps generation near
# raw mlx-lm speed (measured: TUI/raw tokens/s went from ~0.5 to ~0.9 with a
# tiny model on the 2-core dev machine).
STREAM_SWITCH_INTERVAL_S = 0.0005
#
# Also while a stream runs, the objects that existed before it (the loaded model's
# tokenizer, the widgets on screen: millions) are frozen out of the garbage
# collector: a full collection walked them all, 40-50 ms of the UI thread landing
# in one frame, three times in a replayed 2,000-token answer (bench_chat --ui-only).
# They are unfrozen when the last stream ends, so their garbage is collected then.
_streams = 0
_saved_interval: float | None = None


def engine_priority(on: bool) -> None:
    """While any stream runs: shorten the GIL switch interval and freeze the GC's old objects
    (UI thread only); restore both when the last stream ends."""
    global _streams, _saved_interval
    if on:
        if _streams == 0:
            _saved_interval = sys.getswitchinterval()
            sys.setswitchinterval(STREAM_SWITCH_INTERVAL_S)
            gc.freeze()
        _streams += 1
    elif _streams > 0:
        _streams -= 1
        if _streams == 0 and _saved_interval is not None:
            sys.setswitchinterval(_saved_interval)
            gc.unfreeze()


class FlushPacer:
    """Picks the delay to the next flush from the UI thread's share of the last second.

    That CPU time covers everything the stream costs the UI thread (the appends,
    then the layouts and repaints Textual does after them). A frame's cost is not
    a constant to divide by the budget: most flushes repaint only the answer's
    tail, some lay out the screen (see StreamedMarkdown), and a longer delay
    gathers more text, so more of them lay out. So the delay is steered instead:
    longer while the share is over ``UI_CPU_BUDGET``, shorter while it is under,
    between ``FLUSH_INTERVAL_S`` and ``MAX_FLUSH_INTERVAL_S``. Call from the UI thread.
    """

    def __init__(
        self, clock: Callable[[], float] = time.perf_counter, cpu_clock: Callable[[], float] = time.thread_time
    ) -> None:
        self._clock, self._cpu_clock = clock, cpu_clock
        self._interval = FLUSH_INTERVAL_S
        # (wall, UI thread CPU) at recent flushes; the first flush, which also paid
        # for the stream's start (mounting the messages), is left out.
        self._marks: list[tuple[float, float]] = []
        self._started = False

    def next_interval(self) -> float:
        mark = (self._clock(), self._cpu_clock())
        if not self._started:
            self._started = True
            self._marks = [mark]
            return self._interval
        self._marks.append(mark)
        while len(self._marks) > 2 and mark[0] - self._marks[1][0] >= PACER_WINDOW_S:
            self._marks.pop(0)
        (wall0, cpu0), (wall1, cpu1) = self._marks[0], mark
        share = (cpu1 - cpu0) / max(wall1 - wall0, 1e-6)
        step = min(PACER_MAX_STEP, max(1 / PACER_MAX_STEP, share / UI_CPU_BUDGET))
        self._interval = min(MAX_FLUSH_INTERVAL_S, max(FLUSH_INTERVAL_S, self._interval * step))
        return self._interval


@dataclass
class Segment:
    """Consecutive text of one kind ("reasoning" or "answer") and how many events made it."""

    kind: str
    text: str
    events: int


@dataclass
class Batch:
    """Everything that arrived since the last drain, in arrival order."""

    segments: list[Segment] = field(default_factory=list)
    stats: GenStats | None = None
    finished: Finished | None = None
    other: list[Any] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.segments and self.stats is None and self.finished is None and not self.other


class StreamBatch:
    """A thread-safe accumulator of ``ReasoningDelta``/``AnswerDelta``/``StatsUpdate``/``Finished``.

    Anything else (progress, logs) is kept in order in ``Batch.other``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._batch = Batch()
        self.pushed = 0  # events received, for tests and benchmarks
        self.drains = 0  # non-empty batches handed to the UI

    def push(self, event: Any) -> None:
        with self._lock:
            self.pushed += 1
            b = self._batch
            if isinstance(event, (ReasoningDelta, AnswerDelta)):
                seg_kind = "reasoning" if isinstance(event, ReasoningDelta) else "answer"
                if b.segments and b.segments[-1].kind == seg_kind:
                    last = b.segments[-1]
                    last.text += event.text
                    last.events += 1
                else:
                    b.segments.append(Segment(seg_kind, event.text, 1))
            elif isinstance(event, StatsUpdate):
                b.stats = event.stats
            elif isinstance(event, Finished):
                b.finished = event
                b.stats = event.stats
            else:
                b.other.append(event)

    def drain(self) -> Batch:
        with self._lock:
            batch, self._batch = self._batch, Batch()
        if not batch.empty:
            self.drains += 1
        return batch
