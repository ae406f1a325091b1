"""The library's table of models: sortable, filterable, with A/B marks for compare."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual.widgets import DataTable

from optiq_tui.ui.format import human_bytes, human_count

if TYPE_CHECKING:
    from optiq_tui.library.catalog import ModelInfo

# (column key = ModelInfo field, header, cell text)
COLUMNS: list[tuple[str, str, Callable[[Any], str]]] = [
    ("name", "Name", lambda m: m.name),
    ("model_type", "Arch", lambda m: m.model_type or "?"),
    ("n_params", "Params", lambda m: human_count(m.n_params)),
    ("size_bytes", "Size", lambda m: human_bytes(m.size_bytes)),
    ("bpw", "BPW", lambda m: "?" if m.bpw is None else f"{m.bpw:.2f}"),
    ("quant", "Quantization", lambda m: m.quant or "?"),
    ("chat_format", "Format", lambda m: m.chat_format or "?"),
    ("context_length", "Context", lambda m: human_count(m.context_length)),
]
SORT_KEYS = [key for key, _, _ in COLUMNS]
NUMERIC = {"n_params", "size_bytes", "bpw", "context_length"}
# Long repo ids and quant descriptions would push the other columns off screen;
# the details panel shows them whole.
MAX_WIDTH = {"name": 26, "quant": 20}
# Left out on narrow terminals (the details panel still shows them).
WIDE_ONLY = {"chat_format", "context_length"}


def matches(info: ModelInfo, query: str) -> bool:
    """Every word of ``query`` appears (case-insensitive) in one of the shown fields."""
    haystack = " ".join(
        str(v)
        for v in (info.name, info.model_type, info.quant, info.repo_id, info.chat_format, info.source)
        if v
    ).lower()
    return all(word in haystack for word in query.lower().split())


def _sort_value(info: ModelInfo, key: str) -> tuple[int, Any]:
    value = getattr(info, key)
    # Unknown values sort last whichever way the column is sorted.
    if value is None:
        return (1, 0)
    return (0, value if key in NUMERIC else str(value).lower())


class ModelTable(DataTable):
    """Shows ``models`` narrowed by ``filter_text`` and ordered by ``sort_key``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.models: list[ModelInfo] = []
        self.filter_text = ""
        self.sort_key = "name"
        self.sort_reverse = False
        # mark letter ("A"/"B") -> model path
        self.marks: dict[str, str] = {}
        self.narrow = False
        self._shown: list[ModelInfo] = []

    # -- what is shown -------------------------------------------------------

    @property
    def shown(self) -> list[ModelInfo]:
        """The models in the table, in display order."""
        return list(self._shown)

    @property
    def highlighted_model(self) -> ModelInfo | None:
        if not self._shown or self.cursor_row < 0 or self.cursor_row >= len(self._shown):
            return None
        return self._shown[self.cursor_row]

    def marked(self, letter: str) -> ModelInfo | None:
        path = self.marks.get(letter)
        return next((m for m in self.models if str(m.path) == path), None)

    # -- changes -------------------------------------------------------------

    def set_models(self, models: list[ModelInfo], highlight: str | None = None) -> None:
        """Replace the models; put the cursor on ``highlight`` (a name or path) if given."""
        self.models = list(models)
        known = {str(m.path) for m in self.models}
        self.marks = {k: v for k, v in self.marks.items() if v in known}
        self._rebuild(highlight)

    def set_narrow(self, narrow: bool) -> None:
        if narrow != self.narrow:
            self.narrow = narrow
            self._rebuild()

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._rebuild()

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        """Sort by column ``key``; the same key again flips the order."""
        if reverse is None:
            reverse = not self.sort_reverse if key == self.sort_key else key in NUMERIC
        self.sort_key = key
        self.sort_reverse = reverse
        self._rebuild()

    def cycle_sort(self) -> None:
        """Move the sort to the next column (numeric columns sort largest first)."""
        nxt = SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)]
        self.sort_by(nxt, reverse=nxt in NUMERIC)

    def toggle_mark(self, letter: str) -> ModelInfo | None:
        """Mark the highlighted model as ``letter`` (or unmark it); returns the marked model."""
        info = self.highlighted_model
        if info is None:
            return None
        path = str(info.path)
        if self.marks.get(letter) == path:
            del self.marks[letter]
            result = None
        else:
            self.marks = {k: v for k, v in self.marks.items() if v != path}
            self.marks[letter] = path
            result = info
        self._rebuild()
        return result

    # -- rendering -----------------------------------------------------------

    def _rebuild(self, highlight: str | None = None) -> None:
        current = self.highlighted_model
        keep = highlight or (str(current.path) if current else None)
        shown = [m for m in self.models if matches(m, self.filter_text)]
        shown.sort(key=lambda m: _sort_value(m, "name"))
        shown.sort(key=lambda m: _sort_value(m, self.sort_key), reverse=self.sort_reverse)
        if self.sort_reverse:
            # Unknown values last in both directions.
            shown.sort(key=lambda m: getattr(m, self.sort_key) is None)
        self._shown = shown
        self.clear(columns=True)
        columns = [c for c in COLUMNS if not (self.narrow and c[0] in WIDE_ONLY)]
        mark_of = {path: letter for letter, path in self.marks.items()}
        rows = []
        for info in shown:
            cells = {key: Text(fmt(info), no_wrap=True) for key, _, fmt in columns}
            if str(info.path) in mark_of:
                cells["name"] = Text.assemble((mark_of[str(info.path)], "bold reverse"), " ", cells["name"])
            rows.append((info, cells))
        widths = {
            key: min(cap, max([len(header) + 2] + [cells[key].cell_len for _, cells in rows]))
            for key, header, _ in columns
            if (cap := MAX_WIDTH.get(key))
        }
        for key, header, _ in columns:
            label = header
            if key == self.sort_key:
                label += " ▼" if self.sort_reverse else " ▲"
            self.add_column(label, key=key, width=widths.get(key))
        for info, cells in rows:
            for key, width in widths.items():
                cells[key].truncate(width, overflow="ellipsis")
            self.add_row(*cells.values(), key=str(info.path))
        if keep:
            for row, info in enumerate(shown):
                if keep in (str(info.path), info.name):
                    self.move_cursor(row=row)
                    break
