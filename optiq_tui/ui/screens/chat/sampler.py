"""The sampler dialog: temperature, top-p, max tokens and system prompt of one conversation.

An empty field means the default: the model's recommendation
(``generation_config.json``) for temperature and top-p, the app's settings
for the rest. What is set here is saved with the conversation.
"""

from __future__ import annotations

from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

# Field id -> (label, parser, problem text when the parsed value is out of range).
FIELDS: dict[str, tuple[str, Callable[[str], Any], Callable[[Any], bool], str]] = {
    "temperature": ("Temperature", float, lambda v: v >= 0, "temperature: 0 (greedy) or more"),
    "top_p": ("Top-p", float, lambda v: 0 < v <= 1, "top-p: above 0, at most 1"),
    "max_tokens": ("Max tokens", int, lambda v: v >= 1, "max tokens: a whole number, 1 or more"),
}


def parse_fields(values: dict[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The set values (empty fields left out) and a problem per invalid field, all of them at once."""
    chosen: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for key, (_label, parse, ok, problem) in FIELDS.items():
        text = values.get(key, "").strip()
        if not text:
            continue
        try:
            value = parse(text)
        except ValueError:
            problems[key] = problem
            continue
        if ok(value):
            chosen[key] = value
        else:
            problems[key] = problem
    return chosen, problems


class SamplerModal(ModalScreen[dict | None]):
    """Edits a conversation's sampler; Enter applies, Esc cancels, Ctrl+D empties every field."""

    DEFAULT_CSS = """
    SamplerModal #sampler-box { padding: 0 1; }
    SamplerModal #sampler-grid { grid-size: 3; grid-rows: 1 3; grid-gutter: 0 1; height: auto; margin-top: 1; }
    """

    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+d", "defaults", "Defaults"),
    ]

    def __init__(self, current: dict[str, Any], fallback: Any, defaults: str, system_default: str) -> None:
        super().__init__(classes="dialog")
        self.current = current
        self.fallback = fallback  # the SamplerSettings an empty field means
        self.defaults = defaults
        self.system_default = system_default

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box", id="sampler-box") as box:
            box.border_title = "Sampler for this conversation"
            yield Static(f"An empty field means the default: {self.defaults}.", id="sampler-defaults", markup=False)
            with Grid(id="sampler-grid"):
                for label, *_rest in FIELDS.values():
                    yield Label(label)
                for key in FIELDS:
                    value = self.current.get(key)
                    default = f"{getattr(self.fallback, key):g} (default)"
                    yield Input("" if value is None else str(value), placeholder=default, id=key)
            yield Label("System prompt")
            yield Input(self.current.get("system_prompt") or "", placeholder=self.system_default, id="system_prompt")
            yield Static("", id="sampler-errors", classes="validation")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Apply (enter)", variant="primary", id="apply")
                yield Button("Defaults (^d)", id="defaults")
                yield Button("Cancel (esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#apply")
    def _apply(self) -> None:
        values = {key: self.query_one(f"#{key}", Input).value for key in FIELDS}
        chosen, problems = parse_fields(values)
        for key in FIELDS:
            self.query_one(f"#{key}", Input).set_class(key in problems, "-invalid")
        if problems:
            self.query_one("#sampler-errors", Static).update("Fix: " + "; ".join(problems.values()))
            self.query_one(f"#{next(iter(problems))}", Input).focus()
            return
        system = self.query_one("#system_prompt", Input).value.strip()
        if system:
            chosen["system_prompt"] = system
        self.dismiss(chosen)

    @on(Button.Pressed, "#defaults")
    def action_defaults(self) -> None:
        for field in (*FIELDS, "system_prompt"):
            self.query_one(f"#{field}", Input).value = ""

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
