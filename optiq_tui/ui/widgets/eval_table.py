"""The quick-eval results table."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

from optiq_tui.ui.format import human_bytes
from optiq_tui.ui.widgets.model_table import truncate_middle

COLUMNS = ("model", "bpw", "size", "mean KL", "KL 95% CI", "p99 KL", "ppl", "top-1", "flips", "retrieval")


def _fmt(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return format(value, fmt)
    return str(value)


def _retrieval(value: Any) -> str:
    # A single score, or scores per (context, hops) setting: show their mean.
    if isinstance(value, dict):
        values = [v for v in value.values() if isinstance(v, (int, float))]
        value = sum(values) / len(values) if values else None
    return _fmt(None if value is None else value * 100, ".0f") + ("%" if value is not None else "")


def _interval(low: Any, high: Any) -> str:
    return "–" if low is None or high is None else f"{low:.4f}–{high:.4f}"


def _flips(changed: Any, asked: Any) -> str:
    return "–" if changed is None else f"{changed}/{asked}"


def row_cells(row: Any) -> tuple[str, ...]:
    """The cells of one ``ModelEval`` row, formatted for reading."""
    return (
        row.name + (" (reference)" if getattr(row, "is_reference", False) else ""),
        _fmt(row.bpw, ".2f"),
        human_bytes(row.size_bytes),
        _fmt(row.mean_kl, ".4f"),
        _interval(getattr(row, "kl_low", None), getattr(row, "kl_high", None)),
        _fmt(row.p99_kl, ".4f"),
        _fmt(row.ppl, ".2f"),
        _fmt(None if row.top1 is None else row.top1 * 100, ".1f") + ("%" if row.top1 is not None else ""),
        _flips(getattr(row, "flips", None), getattr(row, "flip_prompts", 0)),
        _retrieval(row.retrieval),
    )


# Narrower than this, or when names would be cut below MIN_WIDE_NAME, the size and KL-interval
# columns go (the library shows the size, the saved report and the CLI the interval) and names
# are cut in the middle, so top-1, flips and retrieval stay on screen.
NARROW = 100
WIDE_ONLY = ("size", "KL 95% CI")
MIN_NAME = 14
MIN_WIDE_NAME = 24


class EvalTable(DataTable):
    """One row per evaluated model, in the report's order."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rows: list[Any] = []
        self._width: int | None = None

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True

    def on_resize(self) -> None:
        if self.size.width != self._width:
            self.show_rows(self._rows)

    def show_rows(self, rows: list[Any]) -> None:
        self._rows = list(rows)
        self._width = width = self.size.width
        cells = [dict(zip(COLUMNS, row_cells(row))) for row in self._rows]

        def layout(narrow: bool) -> tuple[list[str], int]:
            columns = [c for c in COLUMNS if not (narrow and c in WIDE_ONLY)]
            others = sum(max([len(c)] + [len(r[c]) for r in cells]) + 2 for c in columns[1:])
            # The room left for names: their padding, and a scrollbar's once the rows pass the table's height.
            return columns, width - others - 2 - (2 if len(cells) > 10 else 0)

        columns, room = layout(width < NARROW)
        if width >= NARROW and room < MIN_WIDE_NAME:
            columns, room = layout(True)
        for shown in cells:
            shown["model"] = truncate_middle(shown["model"], max(MIN_NAME, room)) if width else shown["model"]
        # Widths given, not measured: DataTable measures new rows only when idle, which a report
        # arriving from a job does not always bring about (the cells stayed cut to the headers).
        self.clear(columns=True)
        for c in columns:
            self.add_column(c, width=max([len(c)] + [len(r[c]) for r in cells]), key=c)
        for i, (row, shown) in enumerate(zip(self._rows, cells)):
            self.add_row(*(shown[c] for c in columns), key=f"{i}:{row.name}")
