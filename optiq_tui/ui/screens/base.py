"""The one way a screen runs an engine job: start (or re-attach), follow its events, end.

A job belongs to the engine, not to the screen: the screen starts it through
the app's engine client, reads its events in a Textual worker (so the UI
never waits on the engine) and hears how it ended through four hooks. A
stream of thousands of events a second (an answer) goes instead to a
thread-safe sink (``job_sink``) off the loop. One job at a time per screen:
starting another while one runs says "Still running"; a worker that raises
meets the one error handler here.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from textual import work
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from optiq_tui.engine.jobs import JobInfo
from optiq_tui.progress import OptiqError, Progress

# Byte-level download progress can fire thousands of times a second; the eye
# needs ~20 updates a second, and the loop should not spend itself on stale ones.
PROGRESS_INTERVAL_S = 0.05


def event_name(event: Any) -> str:
    """An event's class name, also for one that arrived from an engine process as a WireEvent."""
    from optiq_tui.engine.wire import WireEvent

    return event.type if isinstance(event, WireEvent) else type(event).__name__


class ProgressThrottle:
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


class JobScreen(Screen):
    """A screen that follows one engine job at a time (see the module docstring)."""

    # What the guard says when a second job is asked for while one runs.
    BUSY_TEXT = "Still running: Esc stops it first."

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job: JobInfo | None = None  # the job this screen follows, until it ends

    @property
    def job_running(self) -> bool:
        return self.job is not None

    def start_job(self, kind: str, **args: Any) -> bool:
        """Start a ``kind`` job in the engine and follow it; False (with a notice) when one already runs."""
        if self.job is not None:
            self.notify(self.BUSY_TEXT, severity="warning")
            return False
        # Taken now, so a second key press before the engine answers meets the guard too.
        self.job = JobInfo(0, kind, kind, "queued")
        self._follow(kind, args, None)
        return True

    def attach_job(self, job: JobInfo) -> None:
        """Follow a job someone else started (after an SSH drop, another TUI), from its first event."""
        self.job = job
        self._follow(job.kind, {}, job)

    async def cancel_job(self) -> None:
        """Ask the engine to stop this screen's job; its end arrives through ``job_cancelled``."""
        if self.job is not None and self.job.id:
            engine = await self.app.client()
            self.job = await engine.cancel(self.job.id)

    @work(exclusive=True, group="job", exit_on_error=False)
    async def _follow(self, kind: str, args: dict[str, Any], job: JobInfo | None) -> None:
        engine = await self.app.client()
        try:
            if job is None:
                job = await engine.submit(kind, **args)
        except BaseException:
            self.job = None
            raise
        self.job = job
        await self.job_started(job)
        sink = self.job_sink(job)
        if sink is not None:
            await engine.drain(job.id, sink)
        else:
            throttle = ProgressThrottle()
            async for event in engine.events(job.id):
                if throttle.admit(event):
                    await self.job_event(job, event)
        final = await engine.job(job.id)
        self.job = None
        if final.state == "done":
            await self.job_done(final)
        elif final.state == "failed":
            await self.job_failed(final)
        else:  # cancelled, or interrupted by an engine that stopped
            await self.job_cancelled(final)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        # The one handler for work this screen gave a worker that raised (engine gone, bad request).
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        self.app.show_error("The engine could not run this", error if error is not None else OptiqError("?"))
        if event.worker.group == "job":
            self.job = None
            self.call_later(self.job_lost)

    # ---- hooks ------------------------------------------------------------

    async def job_started(self, job: JobInfo) -> None:
        """The engine took the job (it has an id now)."""

    def job_sink(self, job: JobInfo) -> Callable[[Any], None] | None:
        """A thread-safe callable taking every event of ``job`` off the loop (a stream that batches
        its own updates, see StreamBatch), or None: events come to ``job_event``, progress thinned."""
        return None

    async def job_event(self, job: JobInfo, event: Any) -> None:
        """One event of the job (Progress, Log, StageChanged...)."""

    async def job_done(self, job: JobInfo) -> None:
        """The job ended with ``job.result``."""

    async def job_failed(self, job: JobInfo) -> None:
        """The job failed with ``job.error`` (one line); nothing half-made was kept."""
        self.app.show_error(f"{job.title} failed", OptiqError(job.error or "failed"), "")

    async def job_cancelled(self, job: JobInfo) -> None:
        """The job was cancelled (or its engine stopped); nothing half-made was kept."""
        self.notify(f"{job.title}: cancelled; nothing was kept.", severity="warning")

    def job_lost(self) -> None:
        """The job could not be started or followed (the error was shown)."""
