"""Small dialogs: an error, a yes/no question, a line of text, the key help."""

from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static


class ErrorModal(ModalScreen[None]):
    """Shows what went wrong (the OptiqError text) and, smaller, the details."""

    BINDINGS = [Binding("escape,enter,q", "dismiss", "Close")]

    def __init__(self, title: str, message: str, details: str = "") -> None:
        super().__init__(classes="dialog error-dialog")
        self.title_text = title
        self.message = message
        self.details = details

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box") as box:
            box.border_title = self.title_text
            yield Static(self.message, id="error-message", markup=False)
            if self.details:
                with VerticalScroll(id="error-details-scroll"):
                    yield Static(self.details, id="error-details", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", variant="primary", id="close")

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)


class ConfirmModal(ModalScreen[bool]):
    """A yes/no question; ``y``/``n`` answer it without the mouse."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.question = question
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box") as box:
            box.border_title = self.title_text
            yield Static(self.question, id="question", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"{self.yes} (y)", variant="error", id="yes")
                yield Button(f"{self.no} (n)", variant="default", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


def export_dialog(title: str, what: str, default: Path) -> "InputModal":
    """Asks where to export ``what``, naming the one folder every export goes to; paths shown with ~
    (the writers expand it), so the input holds the whole path at 80 columns."""
    from optiq_tui.ui.widgets.model_details import display_path

    prompt = f"Exports (conversations and eval reports) go to {display_path(default.parent)}. Write {what} to:"
    return InputModal(title, prompt, value=display_path(default))


class InputModal(ModalScreen[str | None]):
    """Asks for one line of text (a repo id, a file path); Enter accepts, Esc cancels."""

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str, prompt: str, placeholder: str = "", value: str = "") -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.prompt = prompt
        self.placeholder = placeholder
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box") as box:
            box.border_title = self.title_text
            # A Label sizes to its text and is cut at the box's edge; the prompt must wrap.
            yield Label(self.prompt, markup=False, classes="dialog-prompt")
            yield Input(value=self.value, placeholder=self.placeholder, id="answer")
            yield Static("", id="input-error", classes="validation")
            with Horizontal(classes="dialog-buttons"):
                yield Button("OK (enter)", variant="primary", id="ok")
                yield Button("Cancel (esc)", id="cancel")

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def _accept(self) -> None:
        text = self.query_one("#answer", Input).value.strip()
        if not text:
            self.query_one("#input-error", Static).update("Type something first, or Esc to cancel.")
            return
        self.dismiss(text)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class TextModal(ModalScreen[None]):
    """A scrollable page of text (key help, skipped folders)."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.text = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box wide") as box:
            box.border_title = self.title_text
            with VerticalScroll():
                yield Static(self.text, id="text-body", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close (esc)", variant="primary", id="close")

    @on(Button.Pressed, "#close")
    def _close(self) -> None:
        self.dismiss(None)
