"""Sizes and counts for people, and sizes people type: one convention for the TUI and the CLI.

Decimal units (1 GB = 10^9 bytes), as Finder, the Hub and disk tools show them.
"""

from __future__ import annotations

import re

_UNITS = ("B", "KB", "MB", "GB", "TB")
_FACTORS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
            "T": 10**12, "TB": 10**12, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def human_bytes(n: float | None) -> str:
    """1536 -> '1.5 KB'; None -> '?'."""
    if n is None:
        return "?"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def human_count(n: float | None) -> str:
    """135_000_000 -> '135M'; 1_700_000_000 -> '1.7B'."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("", "K", "M", "B"):
        if abs(value) < 1000 or unit == "B":
            return f"{value:.1f}{unit}" if unit and value < 10 else f"{value:.0f}{unit}"
        value /= 1000
    return f"{value:.1f}B"


def parse_size(text: str) -> int:
    """'16GB', '16 GiB', '512M', '2e9' -> bytes; ValueError with a readable message otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).upper() if match else ""
    if match is None or unit not in _FACTORS:
        raise ValueError(f"{text!r} is not a size (examples: 16GB, 512MB, 8GiB)")
    return int(float(match.group(1)) * _FACTORS[unit])
