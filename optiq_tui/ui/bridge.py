"""The engine thread, seen from Textual: jobs in, past-tense messages out.

All MLX work runs on the app's single :class:`EngineThread` (MLX streams
belong to the thread that made them). The bridge submits jobs there and turns
the thread's callbacks into :mod:`optiq_tui.ui.messages` posted to the screen
that asked: ``post_message`` is thread-safe, so no widget is ever touched off
the UI thread. Downloads do no MLX work, so they get a second thread of the
same kind and never wait behind a long quantize or a generation.
"""

from __future__ import annotations

import threading
import time
import traceback
from typing import Any, Callable

from textual.message_pump import MessagePump

from optiq_tui.engine.blas import use_openblas
from optiq_tui.engine.worker import EngineThread, Job, JobHandle
from optiq_tui.progress import OptiqError, Progress
from optiq_tui.ui.messages import JobCancelled, JobFailed, JobFinished, JobProgressed

# Byte-level download progress can fire thousands of times a second; the eye
# needs ~20 updates a second, and the queue should not fill with stale ones.
PROGRESS_INTERVAL_S = 0.05


def error_details(error: BaseException) -> str:
    """What the error modal shows under the message: the cause chain or the traceback."""
    if isinstance(error, OptiqError):
        cause = error.__cause__ or error.__context__
        if cause is None:
            return ""
        return "".join(traceback.format_exception_only(type(cause), cause)).strip()
    return "".join(traceback.format_exception(type(error), error, error.__traceback__)).strip()


class _ProgressThrottle:
    """Passes a Progress event at most every PROGRESS_INTERVAL_S per stage, and always the last one."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}

    def admit(self, event: Any) -> bool:
        if not isinstance(event, Progress):
            return True
        if event.total is not None and event.done >= event.total:
            return True
        now = time.monotonic()
        if now - self._last.get(event.stage, 0.0) < PROGRESS_INTERVAL_S:
            return False
        self._last[event.stage] = now
        return True


class EngineBridge:
    """Owns the engine thread (MLX work) and the I/O thread (downloads)."""

    def __init__(self) -> None:
        self.engine = EngineThread("optiq-engine")
        self._io: EngineThread | None = None

    @property
    def io(self) -> EngineThread:
        if self._io is None:
            self._io = EngineThread("optiq-io")
        return self._io

    def submit(
        self,
        target: MessagePump,
        job: Job,
        *,
        name: str,
        mlx: bool = True,
        on_event: Callable[[JobHandle, Any], None] | None = None,
    ) -> JobHandle:
        """Run ``job(emit, cancel)`` off the UI thread; ``target`` receives Job* messages.

        ``on_event``, when given, receives the events on the worker thread
        instead of JobProgressed messages (for streams that batch their own
        updates); it must not touch widgets.
        """
        throttle = _ProgressThrottle()

        def forward(handle: JobHandle, event: Any) -> None:
            if throttle.admit(event):
                target.post_message(JobProgressed(handle, event))

        def failed(handle: JobHandle, error: BaseException) -> None:
            target.post_message(JobFailed(handle, error, error_details(error)))

        def run(emit: Callable[[Any], None], cancel: threading.Event) -> Any:
            # The TUI starts without OpenBLAS (no re-exec before first paint);
            # it must be in place before a job first imports MLX.
            use_openblas()
            return job(emit, cancel)

        thread = self.engine if mlx else self.io
        return thread.submit(
            run,
            name=name,
            on_event=on_event or forward,
            on_done=lambda h, result: target.post_message(JobFinished(h, result)),
            on_error=failed,
            on_cancelled=lambda h: target.post_message(JobCancelled(h)),
        )

    def submit_call(
        self, target: MessagePump, fn: Callable[[], Any], *, name: str, mlx: bool = True
    ) -> JobHandle:
        """Run a plain ``fn()`` (no progress, no cancel) off the UI thread."""

        def job(_emit: Callable[[Any], None], _cancel: threading.Event) -> Any:
            return fn()

        return self.submit(target, job, name=name, mlx=mlx)

    @property
    def busy(self) -> bool:
        return self.engine.busy or (self._io is not None and self._io.busy)

    def shutdown(self, timeout: float = 2.0) -> None:
        """Cancel what runs and stop the threads, waiting up to ``timeout`` for each."""
        self.engine.shutdown(timeout=timeout)
        if self._io is not None:
            self._io.shutdown(timeout=timeout)
