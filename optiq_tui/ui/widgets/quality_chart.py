"""A small text scatter plot of quality (mean KL) against bits per weight.

Hand-written because it is a few dozen lines of character placement and the
plotting packages for Textual pull in heavy dependencies for one chart.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.widget import Widget
from textual.content import Content


@dataclass(frozen=True)
class Point:
    label: str
    bpw: float
    kl: float


MARKERS = "123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def plot(points: list[Point], width: int, height: int) -> list[str]:
    """Lines of a scatter plot, y = mean KL (lower is better), x = bits per weight."""
    width, height = max(width, 24), max(height, 6)
    if not points:
        return ["(no results yet)"]
    y_label_w = 8
    legend = _legend(["mean KL ↓ vs bits/weight"] + [f"{MARKERS[i % len(MARKERS)]}={p.label}" for i, p in enumerate(points)], width)
    plot_w, plot_h = width - y_label_w - 1, max(1, height - 2 - len(legend))
    xs = [p.bpw for p in points]
    ys = [p.kl for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = 0.0, max(ys) or 1.0
    if x1 - x0 < 1e-9:
        x0, x1 = x0 - 0.5, x1 + 0.5
    grid = [[" "] * plot_w for _ in range(plot_h)]
    for i, p in enumerate(points):
        col = round((p.bpw - x0) / (x1 - x0) * (plot_w - 1))
        row = plot_h - 1 - round((p.kl - y0) / (y1 - y0) * (plot_h - 1))
        cell = grid[row][col]
        grid[row][col] = MARKERS[i % len(MARKERS)] if cell == " " else "*"
    lines = []
    for r, cells in enumerate(grid):
        if r == 0:
            tick = f"{y1:.3g}"
        elif r == plot_h - 1:
            tick = f"{y0:.3g}"
        else:
            tick = ""
        lines.append(f"{tick:>{y_label_w}}│" + "".join(cells))
    lines.append(" " * y_label_w + "└" + "─" * plot_w)
    left, right = f"{x0:.2f}", f"{x1:.2f} bpw"
    lines.append(" " * (y_label_w + 1) + left + right.rjust(plot_w - len(left)))
    return lines + legend


def _legend(entries: list[str], width: int) -> list[str]:
    """The legend's entries packed into lines of ``width``, never one cut off."""
    lines: list[str] = []
    for entry in entries:
        if lines and len(lines[-1]) + 2 + len(entry) <= width:
            lines[-1] += "  " + entry
        else:
            lines.append(entry)
    return lines


class QualityChart(Widget):
    """Scatter of each model's mean KL to the reference against its bits per weight."""

    DEFAULT_CSS = """
    QualityChart { height: 12; border: round $primary 50%; padding: 0 1; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.points: list[Point] = []

    def set_points(self, points: list[Point]) -> None:
        self.points = points
        self.refresh()

    def render(self) -> Content:
        size = self.content_size
        return Content("\n".join(plot(self.points, size.width, size.height)))
