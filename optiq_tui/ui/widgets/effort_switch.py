"""The reasoning-effort switch beside the chat input."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding
from textual.message import Message
from textual.widgets import Static


class EffortSwitch(Static, can_focus=True):
    """Cycles through a model's effort options (low/medium/high, or on/off).

    With no options it is disabled and says why (``effort_unavailable_reason``).
    Enter, space or a click moves to the next option.
    """

    DEFAULT_CSS = """
    EffortSwitch { width: auto; max-width: 34; height: 3; padding: 0 1; content-align: left middle; background: $boost; }
    EffortSwitch:focus { background: $accent 30%; }
    EffortSwitch.-unavailable { color: $text-disabled; }
    """

    BINDINGS = [
        Binding("enter,space", "next", "Next effort", show=False),
    ]

    @dataclass
    class Changed(Message):
        switch: "EffortSwitch"
        value: str

    def __init__(
        self,
        options: list[str] | tuple[str, ...] | None,
        value: str | None = None,
        reason: str | None = None,
        **kwargs,
    ) -> None:
        super().__init__("", **kwargs)
        self.set_options(options, value, reason)

    def set_options(
        self, options: list[str] | tuple[str, ...] | None, value: str | None = None, reason: str | None = None
    ) -> None:
        """Switch to another model's options (``None``: unavailable for ``reason``)."""
        self.options = list(options or [])
        self.reason = reason or "this model has no reasoning control"
        if self.options:
            self.value: str | None = value if value in self.options else self._default()
        else:
            self.value = None
        self.set_class(not self.options, "-unavailable")
        self.can_focus = bool(self.options)
        self.tooltip = None if self.options else self.reason
        self._render_label()

    def _default(self) -> str:
        # Middle option for low/medium/high, first for on/off.
        return "medium" if "medium" in self.options else self.options[0]

    def _render_label(self) -> None:
        # Compact beside the input at 80 columns; why it is unavailable is in the tooltip and ^n.
        if self.options:
            self.update(f"effort: [b]{self.value}[/b] ▸")
        else:
            self.update("effort: n/a")

    def action_next(self) -> None:
        if not self.options:
            self.notify(f"Reasoning effort unavailable: {self.reason}", severity="warning")
            return
        i = self.options.index(self.value) if self.value in self.options else -1
        self.value = self.options[(i + 1) % len(self.options)]
        self._render_label()
        self.post_message(self.Changed(self, self.value))

    def on_click(self) -> None:
        self.action_next()
