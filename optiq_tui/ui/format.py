"""Short human forms of sizes, counts and durations for tables and status lines."""

from __future__ import annotations


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KB' (decimal units, as disk tools and the Hub show them)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def human_count(n: float | None) -> str:
    """135_000_000 -> '135M'."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("", "K", "M", "B"):
        if abs(value) < 1000 or unit == "B":
            return f"{value:.1f}{unit}" if unit and value < 10 else f"{value:.0f}{unit}"
        value /= 1000
    return f"{value:.1f}B"


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
