"""The quick-eval results table."""

from __future__ import annotations

from typing import Any

from textual.widgets import DataTable

from optiq_tui.ui.format import human_bytes

COLUMNS = ("model", "bpw", "size", "mean KL", "p99 KL", "ppl", "top-1", "retrieval")


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


def row_cells(row: Any) -> tuple[str, ...]:
    """The cells of one ``ModelEval`` row, formatted for reading."""
    return (
        row.name + (" (reference)" if getattr(row, "is_reference", False) else ""),
        _fmt(row.bpw, ".2f"),
        human_bytes(row.size_bytes),
        _fmt(row.mean_kl, ".4f"),
        _fmt(row.p99_kl, ".4f"),
        _fmt(row.ppl, ".2f"),
        _fmt(None if row.top1 is None else row.top1 * 100, ".1f") + ("%" if row.top1 is not None else ""),
        _retrieval(row.retrieval),
    )


class EvalTable(DataTable):
    """One row per evaluated model, in the report's order."""

    def on_mount(self) -> None:
        self.cursor_type = "row"
        self.zebra_stripes = True
        self.add_columns(*COLUMNS)

    def show_rows(self, rows: list[Any]) -> None:
        self.clear()
        for i, row in enumerate(rows):
            self.add_row(*row_cells(row), key=f"{i}:{row.name}")
