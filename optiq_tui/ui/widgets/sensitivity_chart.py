"""A live bar chart of per-layer sensitivity, coloured by the bits each layer got.

Textual's Sparkline colours by value; here the colour must say which bit
width the allocator chose, so the chart renders its own block characters.
Each column is one layer (or the worst of a few neighbours when there are
more layers than columns); height is the estimated KL at the lowest candidate
width on a log scale, since sensitivities span several orders of magnitude.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.color import Color
from textual.widget import Widget

BLOCKS = " ▁▂▃▄▅▆▇█"
# Theme variables for bit widths, lowest width first: the theme decides the hue,
# so the chart follows the user's theme and degrades cleanly to 256 colours.
PALETTE = ("warning", "primary", "success", "accent", "secondary", "error")
DECADES = 4  # the scale spans this many orders of magnitude below the worst layer


@dataclass
class LayerBar:
    layer: str
    kl: float
    bits: int | None


def _worst_kl(kl_by_bits: dict[int, float]) -> float:
    finite = [(b, v) for b, v in kl_by_bits.items() if v is not None and math.isfinite(v)]
    if not finite:
        return 0.0
    return min(finite)[1]


class SensitivityChart(Widget):
    """Call :meth:`add_score` per LayerScore event; the chart redraws itself."""

    DEFAULT_CSS = """
    SensitivityChart { height: 8; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.bars: dict[str, LayerBar] = {}

    def add_score(self, layer: str, kl_by_bits: dict[int, float], chosen_bits: int | None) -> None:
        self.bars[layer] = LayerBar(layer, _worst_kl(kl_by_bits), chosen_bits)
        self.refresh()

    def _colors(self) -> dict[int | None, Style]:
        variables = self.app.get_css_variables()
        background = Color.parse(variables.get("background", "black"))

        def style(name: str, **extra: bool) -> Style:
            # Theme colours may carry alpha; blend onto the background for Rich.
            return Style(color=(background + Color.parse(variables.get(name, "white"))).rich_color, **extra)

        widths = sorted({b.bits for b in self.bars.values() if b.bits is not None})
        colors: dict[int | None, Style] = {bits: style(PALETTE[i % len(PALETTE)]) for i, bits in enumerate(widths)}
        colors[None] = style("foreground-muted", dim=True)
        return colors

    def _columns(self, width: int) -> list[LayerBar]:
        bars = list(self.bars.values())
        if len(bars) <= width:
            return bars
        per = math.ceil(len(bars) / width)
        return [max(bars[i : i + per], key=lambda b: b.kl) for i in range(0, len(bars), per)]

    def render(self) -> Text:
        if not self.bars:
            return Text("Per-layer sensitivity appears here as layers are measured.", style="italic")
        rows = max(1, self.size.height - 2)
        width = max(1, self.size.width)
        columns = self._columns(width)
        # Few layers: wider bars with a gap, up to 3 cells per layer.
        cell = max(1, min(3, width // len(columns)))
        bar_width, gap = (cell - 1, " ") if cell > 1 else (1, "")
        colors = self._colors()
        top = max(b.kl for b in columns)
        floor = top / 10**DECADES if top > 0 else 0.0
        levels = []
        for bar in columns:
            if bar.kl <= 0 or top <= 0:
                levels.append(0)
            else:
                frac = (math.log10(max(bar.kl, floor)) - math.log10(floor)) / DECADES
                levels.append(max(1, round(frac * rows * 8)))
        text = Text(no_wrap=True, overflow="crop")
        for row in range(rows - 1, -1, -1):
            for bar, level in zip(columns, levels):
                fill = min(8, max(0, level - row * 8))
                text.append(BLOCKS[fill] * bar_width + gap, colors.get(bar.bits, colors[None]))
            text.append("\n")
        self._legend(text, colors)
        return text

    def _legend(self, text: Text, colors: dict[int | None, Style]) -> None:
        for bits, style in colors.items():
            if bits is None:
                continue
            count = sum(1 for b in self.bars.values() if b.bits == bits)
            label = "unquantized" if bits >= 16 else f"{bits}-bit"
            text.append("■ ", style)
            text.append(f"{label} ({count})  ")
        pending = sum(1 for b in self.bars.values() if b.bits is None)
        if pending:
            text.append("■ ", colors[None])
            text.append(f"not allocated yet ({pending})  ")
        worst = max(self.bars.values(), key=lambda b: b.kl)
        text.append(f"\n{len(self.bars)} layers · most sensitive: {worst.layer} (KL {worst.kl:.3g})", "dim")
