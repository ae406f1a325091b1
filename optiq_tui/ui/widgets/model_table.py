"""The library's table of models: sortable, filterable, with A/B marks for compare."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from rich.text import Text
from textual.binding import Binding
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
HEADERS = {key: header for key, header, _ in COLUMNS}
NUMERIC = {"n_params", "size_bytes", "bpw", "context_length"}
# Long repo ids and quant descriptions would push the other columns off screen;
# the details panel shows them whole. The name takes what the others leave, at least this.
MAX_WIDTH = {"quant": 20}
MIN_NAME_WIDTH = 16
# DataTable pads each cell by one column on both sides.
CELL_PADDING = 2
# Left out on narrow terminals (the details panel still shows them), so names have room.
WIDE_ONLY = {"model_type", "chat_format", "context_length"}


def truncate_middle(text: str, width: int) -> str:
    """'SmolLM2-1…-optiq-4.5bit': quants of one model differ at the end, so keep more of the tail."""
    if len(text) <= width:
        return text
    head = (width - 1) * 2 // 5
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


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

    # The table's own Enter (select) would hide the screen's "Chat" from the footer.
    BINDINGS = [Binding("enter", "select_cursor", "Chat", key_display="⏎")]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.models: list[ModelInfo] = []
        self.filter_text = ""
        self.sort_key = "name"
        self.sort_reverse = False
        # mark letter ("A"/"B") -> model path
        self.marks: dict[str, str] = {}
        self.narrow = False
        self.available_width = 0  # the table's width, for the name column's share
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

    def set_width(self, width: int, narrow: bool) -> None:
        if (width, narrow) != (self.available_width, self.narrow):
            self.available_width, self.narrow = width, narrow
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
        mark_of = {path: letter for letter, path in self.marks.items()}
        columns, rows, natural, widths, room = self._layout(shown, mark_of, narrow=self.narrow)
        if self.available_width and room < natural["name"] and not self.narrow:
            # Whole names before arch, format and context (the details panel shows those).
            columns, rows, natural, widths, room = self._layout(shown, mark_of, narrow=True)
        widths["name"] = min(natural["name"], max(MIN_NAME_WIDTH, room)) if self.available_width else natural["name"]
        for key, header, _ in columns:
            label = header
            if key == self.sort_key:
                label += " ▼" if self.sort_reverse else " ▲"
            # Every width given: DataTable sizes auto columns only when idle, after a first paint.
            self.add_column(label, key=key, width=widths.get(key, natural[key]))
        for info, cells in rows:
            for key, width in widths.items():
                if cells[key].cell_len > width:
                    cells[key] = self._cut(info, key, cells[key], width, mark_of.get(str(info.path)))
            self.add_row(*cells.values(), key=str(info.path))
        self._restore_cursor(keep, shown)

    def _layout(self, shown: list[ModelInfo], mark_of: dict[str, str], *, narrow: bool) -> tuple:
        """Columns, cells per model, natural and capped widths, and the room left for names."""
        columns = [c for c in COLUMNS if not (narrow and c[0] in WIDE_ONLY)]
        rows = []
        for info in shown:
            cells = {key: Text(fmt(info), no_wrap=True) for key, _, fmt in columns}
            if str(info.path) in mark_of:
                cells["name"] = Text.assemble((mark_of[str(info.path)], "bold reverse"), " ", cells["name"])
            rows.append((info, cells))
        natural = {
            key: max([len(header) + (2 if key == self.sort_key else 0)] + [cells[key].cell_len for _, cells in rows])
            for key, header, _ in columns
        }
        widths = {key: min(cap, natural[key]) for key, cap in MAX_WIDTH.items() if key in natural}
        others = sum(widths.get(key, natural[key]) + CELL_PADDING for key in natural if key != "name")
        # The vertical scrollbar's room.
        return columns, rows, natural, widths, self.available_width - others - CELL_PADDING - 2

    @staticmethod
    def _cut(info: ModelInfo, key: str, cell: Text, width: int, mark: str | None) -> Text:
        """A cell cut in the middle to ``width`` (the mark letter, if any, kept in front)."""
        value = next(fmt for k, _, fmt in COLUMNS if k == key)(info)
        if key == "name" and mark:
            return Text.assemble((mark, "bold reverse"), " ", truncate_middle(value, width - 2))
        return Text(truncate_middle(value, width), no_wrap=True)

    def _restore_cursor(self, keep: str | None, shown: list[ModelInfo]) -> None:
        if keep:
            for row, info in enumerate(shown):
                if keep in (str(info.path), info.name):
                    self.move_cursor(row=row)
                    break
