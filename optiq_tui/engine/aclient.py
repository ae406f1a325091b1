"""The engine client for asyncio code (the TUI): calls to ``await``, events to ``async for``.

Wraps either client (in-process or remote): blocking calls run in a worker
thread, and a job's events are pumped from a thread into the event loop, so
the loop never waits on the engine.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, AsyncIterator

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

        def pump() -> None:
            try:
                for event in self.client.events(job_id, after):
                    if stop.is_set():
                        return
                    put(event)
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting side
                put(_Failed(exc))
            finally:
                put(_END)

        threading.Thread(target=pump, name=f"events-{job_id}", daemon=True).start()
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
