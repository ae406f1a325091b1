"""Saved conversations to calibrate on, ticked in a list (the form's --calibration-from-conversations)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import SelectionList
from textual.widgets.selection_list import Selection


def conversation_prompt(summary: Any) -> Text:
    """One row: title, then model, messages and the day it was last updated."""
    title = summary.title or "(untitled)"
    n = summary.n_messages
    return Text.assemble(
        (title, "bold"),
        (f"  {summary.model} · {n} message{'' if n == 1 else 's'} · {summary.updated[:10]}", "dim"),
    )


class ConversationPicker(SelectionList[str]):
    """The store's conversations, most recent first; only read here (the quantizer reads them too)."""

    def __init__(self, summaries: list[Any], **kwargs: Any) -> None:
        self.summaries = {s.id: s for s in summaries}
        super().__init__(*(Selection(conversation_prompt(s), s.id) for s in summaries), **kwargs)

    def picked_titles(self) -> list[str]:
        return [self.summaries[i].title or "(untitled)" for i in self.selected]
