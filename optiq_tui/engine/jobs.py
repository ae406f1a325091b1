"""The engine's jobs: named long operations with an id, typed events and a result.

A job belongs to the engine, not to whoever asked for it: its events are kept
so a client that connects late (or again, after an SSH drop) replays them from
any point, and its result stays until the engine exits.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

JobState = Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
ENDED: tuple[str, ...] = ("done", "failed", "cancelled", "interrupted")


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of a job, as every client sees it (JSON-able)."""

    id: int
    kind: str
    title: str
    state: str
    args: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    result: dict[str, Any] | None = None
    n_events: int = 0
    # The class of the error (e.g. "ContextOverflow"), so a client can offer the way out.
    error_type: str | None = None
    # Set as soon as a cancel is asked; the job stops at its next check (token, layer, shard).
    cancel_requested: bool = False

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobInfo":
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Job:
    """A job's live state; its events are appended from the worker thread and read from any."""

    def __init__(self, job_id: int, kind: str, title: str, args: dict[str, Any]) -> None:
        self.id, self.kind, self.title, self.args = job_id, kind, title, args
        self.state: JobState = "queued"
        self.created = time.time()
        self.started: float | None = None
        self.finished: float | None = None
        self.error: str | None = None
        self.error_type: str | None = None
        self.result: dict[str, Any] | None = None
        self.cancel_event = threading.Event()
        self._events: list[Any] = []
        self._cond = threading.Condition()

    def info(self) -> JobInfo:
        with self._cond:
            return JobInfo(self.id, self.kind, self.title, self.state, dict(self.args), self.created,
                           self.started, self.finished, self.error, self.result, len(self._events),
                           cancel_requested=self.cancel_event.is_set(), error_type=self.error_type)

    def emit(self, event: Any) -> None:
        with self._cond:
            self._events.append(event)
            self._cond.notify_all()

    def set_state(self, state: JobState, *, error: str | None = None,
                  result: dict[str, Any] | None = None, error_type: str | None = None) -> None:
        with self._cond:
            self.state = state
            if state == "running":
                self.started = time.time()
            elif state in ENDED:
                self.finished = time.time()
                self.error, self.result, self.error_type = error, result, error_type
            self._cond.notify_all()

    def events_after(self, after: int, timeout: float | None) -> tuple[list[tuple[int, Any]], bool]:
        """Events numbered ``after``+1.. (waiting up to ``timeout`` for one), and whether the job ended."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._events) > after or self.state in ENDED, timeout)
            batch = [(i + 1, e) for i, e in enumerate(self._events[after:], start=after)]
            return batch, self.state in ENDED

    def wait(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.state in ENDED, timeout)
