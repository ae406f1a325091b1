"""The engine client for asyncio code (the TUI): calls to ``await``, events to ``async for``.

Wraps either client (in-process or remote): blocking calls run in a worker
thread, and a job's events are pumped from a thread into the event loop, so
the loop never waits on the engine.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator, Callable

from optiq_tui.engine.client import EngineClient
from optiq_tui.engine.jobs import JobInfo

_END = object()


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class AsyncEngine:
    def __init__(self, client: EngineClient) -> None:
        self.client = client

    async def submit(self, kind: str, **args: Any) -> JobInfo:
        return await asyncio.to_thread(lambda: self.client.submit(kind, **args))

    async def job(self, job_id: int) -> JobInfo:
        return await asyncio.to_thread(self.client.job, job_id)

    async def jobs(self) -> list[JobInfo]:
        return await asyncio.to_thread(self.client.jobs)

    async def cancel(self, job_id: int) -> JobInfo:
        return await asyncio.to_thread(self.client.cancel, job_id)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.client.status)

    def _read(self, job_id: int, after: int, sink: Callable[[Any], None],
              on_end: Callable[[BaseException | None], None], stop: threading.Event) -> None:
        """Pass the job's events to ``sink`` on a reader thread, then ``on_end(failure or None)``.
        A daemon thread: a TUI that exits mid-answer (the job goes on in the engine) must not wait for it."""

        def read() -> None:
            failure: BaseException | None = None
            try:
                for event in self.client.events(job_id, after):
                    if stop.is_set():
                        return
                    sink(event)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
                failure = exc
            on_end(failure)

        threading.Thread(target=read, name=f"events-{job_id}", daemon=True).start()

    async def events(self, job_id: int, after: int = 0) -> AsyncIterator[Any]:
        """The job's events from ``after`` on, until it ends."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:
                stop.set()  # the loop is closed: nobody is listening any more

        self._read(job_id, after, put, lambda exc: put(_END if exc is None else _Failed(exc)), stop)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
        finally:
            stop.set()  # a reader that leaves early (a closed screen) lets the pump end

    async def drain(self, job_id: int, sink: Callable[[Any], None], after: int = 0) -> None:
        """Pass the job's events to ``sink`` on a reader thread, never the loop; returns when it ends.

        For streams of thousands of events a second (a chat answer): ``sink`` batches them
        (it must be thread-safe and touch no widgets), so the loop sees none of them one by one.
        """
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()
        stop = threading.Event()

        def settle(exc: BaseException | None) -> None:
            if not ended.done():
                ended.set_exception(exc) if exc is not None else ended.set_result(None)

        def on_end(exc: BaseException | None) -> None:
            try:
                loop.call_soon_threadsafe(settle, exc)
            except RuntimeError:
                pass  # the loop is closed: nobody is waiting any more

        self._read(job_id, after, sink, on_end, stop)
        try:
            await ended
        finally:
            stop.set()
