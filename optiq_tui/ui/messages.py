"""Past-tense Textual messages the app posts about work done off the UI thread.

The engine thread (MLX work) and the catalog scanner never touch widgets:
they post these messages (``post_message`` is thread-safe) and the screen
that asked for the work updates itself when it handles them.
"""

from __future__ import annotations

from typing import Any

from textual.message import Message

from optiq_tui.engine.worker import JobHandle


class JobMessage(Message, bubble=False):
    """Something happened to a job submitted through the bridge.

    Not bubbling: only the screen that started the job cares.
    """

    def __init__(self, handle: JobHandle) -> None:
        super().__init__()
        self.handle = handle

    @property
    def job_id(self) -> int:
        return self.handle.id


class JobProgressed(JobMessage):
    """The job emitted ``event`` (a Progress, Log, StageChanged, ... dataclass)."""

    def __init__(self, handle: JobHandle, event: Any) -> None:
        super().__init__(handle)
        self.event = event


class JobFinished(JobMessage):
    """The job returned ``result``."""

    def __init__(self, handle: JobHandle, result: Any) -> None:
        super().__init__(handle)
        self.result = result


class JobFailed(JobMessage):
    """The job raised ``error``; ``details`` is the traceback text for the error modal."""

    def __init__(self, handle: JobHandle, error: BaseException, details: str) -> None:
        super().__init__(handle)
        self.error = error
        self.details = details


class JobCancelled(JobMessage):
    """The job stopped because it was cancelled; it kept nothing half-made."""


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
