"""Past-tense Textual messages the catalog scanner posts from its thread.

The scanner never touches widgets: it posts these messages (``post_message``
is thread-safe) and the library updates itself when it handles them. Engine
jobs are followed by screens/base.py instead.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message


class CatalogScanned(Message, bubble=False):
    """A catalog scan finished; ``highlight`` names the model to put the cursor on."""

    def __init__(self, catalog: Any, highlight: str | None = None) -> None:
        super().__init__()
        self.catalog = catalog
        self.highlight = highlight


class CatalogScanFailed(Message, bubble=False):
    """A catalog scan raised; the library shows the error instead of models."""

    def __init__(self, error: BaseException, details: str) -> None:
        super().__init__()
        self.error = error
        self.details = details
