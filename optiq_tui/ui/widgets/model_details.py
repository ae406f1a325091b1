"""The side panel describing the highlighted model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from optiq_tui.ui.format import human_bytes, human_count

if TYPE_CHECKING:
    from optiq_tui.library.catalog import ModelInfo

BAR_WIDTH = 14


def bit_histogram(histogram: dict[int, int], width: int = BAR_WIDTH) -> Text:
    """One line per bit width: '  4-bit ██████████  180'."""
    text = Text()
    if not histogram:
        return text
    biggest = max(histogram.values()) or 1
    for bits in sorted(histogram):
        count = histogram[bits]
        label = "  unq " if bits >= 16 else f"{bits:>2}-bit "
        bar = "█" * max(1, round(width * count / biggest)) if count else ""
        text.append(label, style="bold")
        text.append(f"{bar:<{width}}")
        text.append(f" {count}\n")
    text.rstrip()
    return text


def display_path(path: Path | str) -> str:
    """``path`` with the home folder as ``~`` (shorter, and the same on every account)."""
    path, home = Path(path), Path.home()
    return f"~/{path.relative_to(home)}" if path.is_relative_to(home) and path != home else str(path)


def describe(info: ModelInfo, mark: str | None = None, *, side_by_side: bool = False) -> RenderableType:
    """The panel's content for ``info``; ``side_by_side`` puts the bits histogram beside the facts."""
    from optiq_tui.library.catalog import chat_format_text  # plain Python, no MLX

    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, str]] = [
        ("Path", display_path(info.path)),
        ("Source", info.source + (f" ({info.repo_id})" if info.repo_id else "")),
        ("Arch", info.model_type or "?"),
        ("Params", human_count(info.n_params)),
        ("On disk", human_bytes(info.size_bytes)),
        ("BPW", "?" if info.bpw is None else f"{info.bpw:.3f}"),
        ("Quant", info.quant or "?"),
        ("Chat", chat_format_text(info.chat_format) if info.chat_format else "?"),
        ("Context", human_count(info.context_length)),
    ]
    if info.source_model:
        rows.append(("Made from", str(info.source_model)))
    if mark:
        rows.append(("Marked", f"{mark} (for compare)"))
    for key, value in rows:
        table.add_row(key, Text(value))
    title = Text(info.name, style="bold")
    if not info.bit_histogram:
        return Group(title, table)
    bits = Group(Text("Bits per layer", style="bold"), bit_histogram(info.bit_histogram))
    if side_by_side:
        # A wide, short panel (under the table on a narrow terminal): two columns fit it.
        row = Table.grid(padding=(0, 3), expand=True)
        row.add_column(ratio=1)
        row.add_column(width=BAR_WIDTH + 12)
        row.add_row(table, bits)
        return Group(title, row)
    return Group(title, table, Text(""), bits)


class ModelDetails(Static):
    """Shows :func:`describe` of one model, or a hint when there is none."""

    # The panel is at least this wide when it sits under the table (narrow terminals).
    SIDE_BY_SIDE_WIDTH = 60

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._shown: tuple[ModelInfo | None, str | None] = (None, None)

    def show(self, info: ModelInfo | None, mark: str | None = None) -> None:
        self._shown = (info, mark)
        if info is None:
            self.update(Text("No model highlighted.", style="italic"))
        else:
            self.update(describe(info, mark, side_by_side=self.size.width >= self.SIDE_BY_SIDE_WIDTH))

    def on_resize(self) -> None:
        self.show(*self._shown)
