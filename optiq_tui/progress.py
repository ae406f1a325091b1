"""Progress reporting and cancellation shared by every long operation.

Long work (download, import, quantize, eval, load) is a plain function that
takes ``progress`` (a callback receiving small frozen events) and ``cancel``
(a ``threading.Event`` checked between units of work), and raises
:class:`Cancelled` when asked to stop.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable


class Cancelled(Exception):
    """The user asked the operation to stop; nothing half-made was kept."""


class OptiqError(Exception):
    """A problem the user can act on; the message is shown as is."""


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage`` (total None: unknown)."""

    stage: str
    done: float = 0
    total: float | None = None
    message: str = ""
    unit: str = ""

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


@dataclass(frozen=True)
class Log:
    """A line for the operation's log."""

    message: str
    level: str = "info"


ProgressFn = Callable[[Any], None]


def no_progress(_event: Any) -> None:
    """The default ``progress`` callback: ignore events."""


def check_cancel(cancel: threading.Event | None) -> None:
    """Raise :class:`Cancelled` if ``cancel`` is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled()
