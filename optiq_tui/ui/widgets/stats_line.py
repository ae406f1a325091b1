"""The live status line under a chat: speed and memory of the current generation."""

from __future__ import annotations

import time

from textual.widgets import Static

from optiq_tui.engine.events import GenStats
from optiq_tui.ui.format import human_bytes


def format_stats(stats: GenStats) -> str:
    """One line of GenStats (fits 100 columns): TTFT, prompt and generation speed, tokens, memory."""
    ttft = "–" if stats.ttft_s is None else f"{stats.ttft_s:.2f}s"
    return (
        f"TTFT {ttft}"
        f" │ prompt {stats.prompt_tokens} tok {stats.prompt_tps:.0f}/s"
        f" │ gen {stats.gen_tokens} tok {stats.gen_tps:.1f}/s"
        f" │ MLX {human_bytes(stats.mlx_active_bytes)} peak {human_bytes(stats.mlx_peak_bytes)}"
        f" │ RSS {human_bytes(stats.rss_bytes)}"
    )


# Live figures change every batch; the eye reads about this many a second.
LIVE_INTERVAL_S = 0.2


class StatsLine(Static):
    """Shows the latest ``GenStats``; keeps the final figures once generation ends.

    ``updates`` counts repaints so tests can check that stats coalesce. Live
    figures repaint at most every ``LIVE_INTERVAL_S``, and without a layout
    pass while the text stays on one line (a layout re-arranges the whole
    screen, transcript included).
    """

    DEFAULT_CSS = """
    StatsLine { height: auto; color: $text-muted; padding: 0 0 0 1; }
    StatsLine.live { color: $success; }
    """

    def __init__(self, text: str = "", **kwargs) -> None:
        super().__init__(text, **kwargs)
        self.stats: GenStats | None = None
        self.updates = 0
        self._shown_at = 0.0
        self._one_line = False

    def show_stats(self, stats: GenStats, *, live: bool) -> None:
        self.stats = stats
        now = time.monotonic()
        if live and self.has_class("live") and now - self._shown_at < LIVE_INTERVAL_S:
            return
        self._shown_at = now
        self.updates += 1
        self.set_class(live, "live")
        self._show(format_stats(stats))

    def show_text(self, text: str) -> None:
        """A status that is not stats (loading, queued, errors)."""
        self.set_class(False, "live")
        self._show(text)

    def _show(self, text: str) -> None:
        one_line = "\n" not in text and len(text) <= self.content_region.width
        self.update(text, layout=not (one_line and self._one_line))
        self._one_line = one_line
