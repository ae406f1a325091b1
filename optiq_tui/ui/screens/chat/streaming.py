"""The chat screen's stream pump: engine events into a StreamBatch, flushed on a paced timer.

A mixin of :class:`ChatScreen`. Token events do not come to the event loop one
by one: the job's reader thread (AsyncEngine.drain) pushes them into a
:class:`StreamBatch`, and a timer drains it and appends each batch to the
answer, so a 1000 tokens/s model never floods the UI; a :class:`FlushPacer`
spaces the flushes so that rendering takes little CPU from generation.
"""

from __future__ import annotations

import asyncio
import time

from textual.widgets import Input

from optiq_tui.ui.widgets.chat_message import ChatMessage
from optiq_tui.ui.widgets.stream_batch import FLUSH_INTERVAL_S, FlushPacer, StreamBatch, engine_priority


class StreamPump:
    """Streams a generation job's events into a ChatMessage (mixed into ChatScreen)."""

    # Set by ChatScreen; declared here for the type checker.
    _batch: StreamBatch
    _gen_message: ChatMessage | None
    _waiting_since: float | None
    answer_ended: asyncio.Event

    def begin_stream(self, message: ChatMessage) -> StreamBatch:
        """Stream the next job's events into ``message``: returns the batch its reader pushes into."""
        batch = self._batch = StreamBatch()
        self._gen_message = message
        self.answer_ended.clear()
        self.transcript.anchor()
        # A blinking cursor repaints the screen twice a second, CPU the stream needs more.
        self.query_one("#prompt", Input).cursor_blink = False
        engine_priority(True)
        self._stop_flushing()
        self._pacer = FlushPacer()
        self._flush_timer = self.set_timer(FLUSH_INTERVAL_S, self._flush_tick)
        # Prompt processing can take seconds: show that the answer is on its way.
        self._waiting_since = time.monotonic()
        self._show_waiting()
        self._waiting_timer.resume()
        return batch

    def _show_waiting(self) -> None:
        if self._waiting_since is None:
            self._waiting_timer.pause()
            return
        self.stats_line.show_text(f"waiting for first token… {time.monotonic() - self._waiting_since:.1f} s", live=True)

    def _stop_waiting(self) -> None:
        self._waiting_since = None
        self._waiting_timer.pause()

    async def _flush_tick(self) -> None:
        ticking = self._flush_timer
        await self._flush()
        # Not when this stream ended during the flush (another may have started its own timer).
        if self._gen_message is not None and self._flush_timer is ticking:
            self._flush_timer = self.set_timer(self._pacer.next_interval(), self._flush_tick)

    def _stop_flushing(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.stop()
            self._flush_timer = None

    async def _flush(self) -> None:
        # The timer and the job-ended handler both flush; one at a time keeps the order.
        async with self._flush_lock:
            batch = self._batch.drain()
            if batch.empty or self._gen_message is None:
                return
            self.flushes += 1
            await self._apply(batch)
