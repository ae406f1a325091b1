"""The live status line under a chat: speed and memory of the current generation."""

from __future__ import annotations

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


class StatsLine(Static):
    """Shows the latest ``GenStats``; keeps the final figures once generation ends.

    ``updates`` counts repaints so tests can check that stats coalesce.
    """

    DEFAULT_CSS = """
    StatsLine { height: auto; color: $text-muted; padding: 0 0 0 1; }
    StatsLine.live { color: $success; }
    """

    def __init__(self, text: str = "", **kwargs) -> None:
        super().__init__(text, **kwargs)
        self.stats: GenStats | None = None
        self.updates = 0

    def show_stats(self, stats: GenStats, *, live: bool) -> None:
        self.stats = stats
        self.updates += 1
        self.set_class(live, "live")
        self.update(format_stats(stats))

    def show_text(self, text: str) -> None:
        """A status that is not stats (loading, queued, errors)."""
        self.set_class(False, "live")
        self.update(text)
