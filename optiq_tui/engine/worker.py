"""The one long-lived thread that does all MLX work.

MLX streams belong to the thread that created them (since MLX 0.31.2, using a
model from another thread can fail with "There is no Stream(gpu, N) in
current thread"), so the app loads, generates, quantizes and evaluates on a
single thread fed by a queue, as mlx-lm's server does.
"""

from __future__ import annotations

import itertools
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from optiq_tui.progress import Cancelled

# A job receives `emit` (send an event to the caller) and `cancel` (an Event to poll).
Job = Callable[[Callable[[Any], None], threading.Event], Any]


@dataclass
class JobHandle:
    """What the caller keeps of a submitted job: its id and a way to stop it."""

    id: int
    name: str
    cancel_event: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancel_event.set()


@dataclass
class _Queued:
    handle: JobHandle
    job: Job
    on_event: Callable[[JobHandle, Any], None]
    on_done: Callable[[JobHandle, Any], None]
    on_error: Callable[[JobHandle, BaseException], None]
    on_cancelled: Callable[[JobHandle], None]


def _ignore(*_args: Any) -> None:
    pass


class EngineThread:
    """Runs jobs one at a time, in order, on one daemon thread.

    Callbacks run on the engine thread: a UI must hop to its own thread
    (Textual: ``post_message`` or ``call_from_thread``) before touching widgets.
    """

    def __init__(self, name: str = "optiq-engine") -> None:
        self._queue: queue.Queue[_Queued | None] = queue.Queue()
        self._ids = itertools.count(1)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._current: JobHandle | None = None
        self._thread.start()

    def submit(
        self,
        job: Job,
        *,
        name: str = "job",
        on_event: Callable[[JobHandle, Any], None] = _ignore,
        on_done: Callable[[JobHandle, Any], None] = _ignore,
        on_error: Callable[[JobHandle, BaseException], None] = _ignore,
        on_cancelled: Callable[[JobHandle], None] = _ignore,
    ) -> JobHandle:
        handle = JobHandle(next(self._ids), name)
        self._queue.put(_Queued(handle, job, on_event, on_done, on_error, on_cancelled))
        return handle

    def call(self, fn: Callable[[], Any], timeout: float | None = None) -> Any:
        """Run ``fn`` on the engine thread and wait for its result (for tests and the CLI)."""
        box: dict[str, Any] = {}

        def job(_emit: Callable[[Any], None], _cancel: threading.Event) -> Any:
            return fn()

        handle = self.submit(
            job,
            name=getattr(fn, "__name__", "call"),
            on_done=lambda _h, r: box.__setitem__("result", r),
            on_error=lambda _h, e: box.__setitem__("error", e),
        )
        if not handle.finished.wait(timeout):
            raise TimeoutError(f"engine call {handle.name} did not finish in {timeout}s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    @property
    def busy(self) -> bool:
        return self._current is not None

    def cancel_current(self) -> None:
        if self._current is not None:
            self._current.cancel()

    def shutdown(self, timeout: float = 5.0) -> None:
        self.cancel_current()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            handle = item.handle
            self._current = handle
            try:
                if handle.cancel_event.is_set():
                    raise Cancelled()
                result = item.job(lambda ev: item.on_event(handle, ev), handle.cancel_event)
            except Cancelled:
                item.on_cancelled(handle)
            except BaseException as exc:  # noqa: BLE001 - reported to the caller, thread lives on
                item.on_error(handle, exc)
            else:
                item.on_done(handle, result)
            finally:
                self._current = None
                handle.finished.set()
