"""The engine process: serve in the foreground, start one in the background, find the running one."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from optiq_tui.progress import OptiqError
from optiq_tui.server import state

DEFAULT_IDLE_S = 600.0
IDLE_ENV = "OPTIQ_ENGINE_IDLE_S"
# How long a client waits for a background engine to write its record.
START_TIMEOUT_S = 60.0


def idle_timeout() -> float:
    try:
        return float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S))
    except ValueError:
        raise OptiqError(f"{IDLE_ENV} must be a number of seconds") from None


def serve(host: str = "127.0.0.1", port: int = 0, idle_s: float | None = None) -> int:
    """Run the engine until stopped, or idle (no client, no job) for ``idle_s`` (0: never)."""
    import uvicorn

    from optiq_tui.engine.service import EngineService
    from optiq_tui.server.app import Activity, build_app
    from optiq_tui.server.openai import openai_routes

    idle_s = idle_timeout() if idle_s is None else idle_s
    lock = state.take_lock()
    key = state.api_key(create=True) if state.requires_key(host) else None
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise OptiqError(f"cannot listen on {host}:{port} ({exc.strerror})") from None
    sock.listen(128)
    bound_port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    address = f"http://{shown}:{bound_port}"
    service = EngineService(journal=True)
    activity = Activity()
    server: Any = None

    def stop() -> None:
        server.should_exit = True

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(_idle_watch(service, activity, idle_s, stop)) if idle_s > 0 else None
        yield
        if task is not None:
            task.cancel()

    app = build_app(service, api_key=key, address=address, on_shutdown=stop, activity=activity,
                    lifespan=lifespan, extra_routes=openai_routes(service))
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    state.write_record(state.EngineRecord(os.getpid(), address, service.started, host, key is not None))
    needs_key = f" (API key required: Authorization: Bearer <the key in {state.api_key_file()}>)"
    print(f"optiq engine pid {os.getpid()} on {address}" + (needs_key if key else ""), flush=True)
    for job in service.interrupted:
        print(f"interrupted: job {job.id} ({job.title}) did not finish when the last engine stopped", flush=True)
    try:
        server.run(sockets=[sock])
    finally:
        state.clear_record(os.getpid())
        service.close()
        lock.close()
    return 0


async def _idle_watch(service: Any, activity: Any, idle_s: float, stop: Any) -> None:
    quiet_since = time.monotonic()
    while True:
        await asyncio.sleep(min(idle_s / 4, 5.0))
        if activity.open or service.busy:
            quiet_since = time.monotonic()
        elif time.monotonic() - max(quiet_since, activity.last) >= idle_s:
            print(f"no client and no job for {idle_s:g} s: stopping", flush=True)
            stop()
            return


def connect() -> Any | None:
    """A remote client of the running engine, or None when none runs (a stale record is cleared)."""
    from optiq_tui.engine.remote import RemoteClient

    record = state.read_record()
    if record is None:
        return None
    return RemoteClient(record.address, state.api_key() if record.key_required else None)


def start_background() -> Any:
    """Start a detached engine (its own session, output to the state folder's log) and connect."""
    log = open(state.log_file(), "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "optiq_tui", "serve"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True, close_fds=True, env=os.environ.copy(),
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        client = connect()
        if client is not None:
            return client
        if proc.poll() is not None and connect() is None:
            # It exited without an engine running (a lost race leaves the winner's record).
            raise OptiqError(f"the engine could not start; see {state.log_file()}")
        time.sleep(0.05)
    raise OptiqError(f"the engine did not start in {START_TIMEOUT_S:g} s; see {state.log_file()}")


def connect_or_start() -> Any:
    return connect() or start_background()


ENGINE_ENV = "OPTIQ_ENGINE"


def open_client(*, in_process: bool = False, start: bool = True) -> Any:
    """The client a face (TUI, headless command) should use.

    In-process with ``in_process`` or ``OPTIQ_ENGINE=in-process`` (tests, debugging); else the
    running engine, or a new background one (``start=False``: in-process when none runs).
    """
    from optiq_tui.engine.client import InProcessClient

    if in_process or os.environ.get(ENGINE_ENV) == "in-process":
        return InProcessClient()
    return connect_or_start() if start else (connect() or InProcessClient())
