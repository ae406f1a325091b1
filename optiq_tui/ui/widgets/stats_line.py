"""The live status line under a chat: speed and memory of the current generation."""

from __future__ import annotations

import time

from textual.widgets import Static

from optiq_tui.engine.events import GenStats
from optiq_tui.ui.format import human_bytes


SEPARATOR = " │ "


def stats_parts(stats: GenStats, memory: bool = True) -> list[str]:
    """The figures of GenStats, each one unbreakable piece: TTFT, prompt, generation, memory."""
    ttft = "–" if stats.ttft_s is None else f"{stats.ttft_s:.2f}s"
    # One new token (a regenerate, the rest reused from the cache) has no meaningful rate;
    # none at all: stopped before the prompt was read (one side of a stopped compare).
    if stats.prompt_tokens > 1:
        prompt = f"prompt {stats.prompt_tokens} tok {stats.prompt_tps:.0f}/s"
    else:
        prompt = "prompt cached" if stats.prompt_tokens == 1 else "prompt –"
    parts = [f"TTFT {ttft}", prompt, f"gen {stats.gen_tokens} tok {stats.gen_tps:.1f}/s"]
    if memory:
        parts += [
            f"MLX {human_bytes(stats.mlx_active_bytes)} peak {human_bytes(stats.mlx_peak_bytes)}",
            f"RSS {human_bytes(stats.rss_bytes)}",
        ]
    return parts


def format_stats(stats: GenStats, width: int = 0, memory: bool = True) -> str:
    """GenStats on one line, or (narrower than ``width``) on several, broken only between figures."""
    lines: list[str] = []
    for part in stats_parts(stats, memory):
        if lines and (width <= 0 or len(lines[-1]) + len(SEPARATOR) + len(part) <= width):
            lines[-1] += SEPARATOR + part
        else:
            lines.append(part)
    return "\n".join(lines)


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

    def __init__(self, text: str = "", *, memory: bool = True, **kwargs) -> None:
        super().__init__(text, **kwargs)
        # Memory is the process's: a compare column leaves it out (both sides share it).
        self.memory = memory
        self.stats: GenStats | None = None
        self.updates = 0
        self._shown_at = 0.0
        self._one_line = False
        self._showing_stats = False

    def show_stats(self, stats: GenStats, *, live: bool) -> None:
        self.stats = stats
        now = time.monotonic()
        if live and self.has_class("live") and now - self._shown_at < LIVE_INTERVAL_S:
            return
        self._shown_at = now
        self.updates += 1
        self.set_class(live, "live")
        self._showing_stats = True
        self._show(format_stats(stats, self.content_region.width, self.memory))

    def show_text(self, text: str, *, live: bool = False) -> None:
        """A status that is not stats (loading, waiting, errors)."""
        self.set_class(live, "live")
        self._showing_stats = False
        self._show(text)

    def on_resize(self) -> None:
        # Re-break the figures for the new width (they break only between figures).
        if self._showing_stats and self.stats is not None and not self.has_class("live"):
            self._show(format_stats(self.stats, self.content_region.width, self.memory))

    def _show(self, text: str) -> None:
        one_line = "\n" not in text and len(text) <= self.content_region.width
        self.update(text, layout=not (one_line and self._one_line))
        self._one_line = one_line
