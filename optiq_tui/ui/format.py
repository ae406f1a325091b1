"""Short human forms of sizes, counts and durations for tables and status lines."""

from __future__ import annotations

from optiq_tui.sizes import human_bytes, human_count

__all__ = ["human_bytes", "human_count", "human_seconds"]


def human_seconds(s: float | None) -> str:
    """75.2 -> '1m15s'; under a minute keeps one decimal."""
    if s is None:
        return ""
    if s < 60:
        return f"{s:.1f}s"
    minutes, seconds = divmod(int(round(s)), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
