"""The engine's control API on Starlette: jobs in, typed events out as JSON lines.

Every error is a JSON object ``{"error": {"message", "type"}}``, never a
traceback. With an API key set (any bind other than loopback), a request
without the right Bearer token gets 401 before anything runs.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any, AsyncIterator, Callable, Sequence

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from optiq_tui.engine.service import BadRequest, EngineService, UnknownJob
from optiq_tui.engine.wire import encode
from optiq_tui.progress import OptiqError
from optiq_tui.server.state import LOOPBACK

MAX_BODY_BYTES = 1 << 20
# An event stream sends an empty line after this long without events.
KEEPALIVE_S = 10.0


def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


class Activity:
    """Open requests and the time the last one ended, for the engine's idle exit."""

    def __init__(self) -> None:
        self.open = 0
        self.last = time.monotonic()


def _host_of(value: bytes) -> str:
    """'127.0.0.1:8080' -> '127.0.0.1', '[::1]:80' -> '::1', 'http://localhost:3000' -> 'localhost'."""
    text = value.decode("latin-1").split("://", 1)[-1].split("/", 1)[0]
    if text.startswith("["):
        return text[1:].split("]", 1)[0]
    return text.rsplit(":", 1)[0] if text.count(":") == 1 else text


class Guard:
    """Pure ASGI middleware: API key check and activity count (streams included, to their end).

    Without a key (a loopback bind), only loopback Host and Origin headers pass: a web
    page the user visits cannot drive the engine (cross-site requests, DNS rebinding).
    """

    def __init__(self, app: ASGIApp, api_key: str | None, activity: Activity) -> None:
        self.app, self.api_key, self.activity = app, api_key, activity

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.api_key is None:
            origin = headers.get(b"origin")
            foreign_origin = origin is not None and _host_of(origin) not in LOOPBACK
            if _host_of(headers.get(b"host", b"")) not in LOOPBACK or foreign_origin:
                await error(403, "refused: requests from web pages or through other host names are not served",
                            "permission_error")(scope, receive, send)
                return
        elif scope["path"] != "/health":
            given = headers.get(b"authorization", b"").decode("latin-1")
            expected = f"Bearer {self.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                await error(401, "missing or wrong API key (send it as 'Authorization: Bearer KEY')",
                            "authentication_error")(scope, receive, send)
                return
        self.activity.open += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.activity.open -= 1
            self.activity.last = time.monotonic()


async def json_body(request: Request) -> dict[str, Any]:
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise HTTPException(413, f"request body over {MAX_BODY_BYTES} bytes")
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise HTTPException(400, f"the body is not valid JSON ({exc.args[0] if exc.args else exc})") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "the body must be a JSON object of job arguments")
    return body


def build_app(service: EngineService, *, api_key: str | None = None, address: str = "",
              on_shutdown: Callable[[], None] = lambda: None, activity: Activity | None = None,
              lifespan: Any = None, extra_routes: Sequence[BaseRoute] = ()) -> ASGIApp:
    """The ASGI app of one engine; ``on_shutdown`` asks the server to stop.

    ``extra_routes``: other faces of the same engine (the OpenAI API) behind the same key check.
    """

    async def health(_r: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def engine(_r: Request) -> JSONResponse:
        return JSONResponse({**service.status(), "address": address})

    async def jobs(_r: Request) -> JSONResponse:
        return JSONResponse({"jobs": [j.to_dict() for j in service.jobs()]})

    async def submit(request: Request) -> JSONResponse:
        args = await json_body(request)
        # Submitting may touch the disk (a new conversation file): off the event loop.
        info = await anyio.to_thread.run_sync(lambda: service.submit(request.path_params["kind"], **args))
        return JSONResponse(info.to_dict(), status_code=202)

    async def job(request: Request) -> JSONResponse:
        return JSONResponse(service.job(request.path_params["job_id"]).to_dict())

    async def cancel(request: Request) -> JSONResponse:
        return JSONResponse(service.cancel(request.path_params["job_id"]).to_dict())

    async def events(request: Request) -> StreamingResponse:
        job_id = request.path_params["job_id"]
        service.job(job_id)  # 404 before the stream starts
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            raise HTTPException(400, "after must be an integer") from None

        async def lines() -> AsyncIterator[bytes]:
            nonlocal after
            sent = time.monotonic()
            while True:
                batch, ended = await anyio.to_thread.run_sync(service.events, job_id, after, 1.0)
                if batch:
                    after = batch[-1][0]
                    yield "".join(json.dumps({"seq": s, "event": encode(e)}) + "\n" for s, e in batch).encode()
                    sent = time.monotonic()
                elif ended:
                    yield (json.dumps({"end": service.job(job_id).to_dict()}) + "\n").encode()
                    return
                elif time.monotonic() - sent >= KEEPALIVE_S:
                    # An empty line through a long silent stage, so a client can tell a hung engine.
                    yield b"\n"
                    sent = time.monotonic()

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def shutdown(_r: Request) -> JSONResponse:
        on_shutdown()
        return JSONResponse({"stopping": True})

    async def on_http(_r: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        return error(exc.status_code, str(exc.detail), "not_found_error" if exc.status_code == 404 else
                     "invalid_request_error")

    async def on_bad(_r: Request, exc: Exception) -> JSONResponse:
        return error(400, str(exc))

    async def on_unknown(_r: Request, exc: Exception) -> JSONResponse:
        return error(404, str(exc), "not_found_error")

    async def on_crash(_r: Request, exc: Exception) -> JSONResponse:
        import traceback

        traceback.print_exception(exc)  # to the engine's log only
        return error(500, f"internal error: {type(exc).__name__}", "server_error")

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/engine", engine),
            Route("/v1/jobs", jobs),
            Route("/v1/jobs/{job_id:int}", job),
            Route("/v1/jobs/{job_id:int}/events", events),
            Route("/v1/jobs/{job_id:int}/cancel", cancel, methods=["POST"]),
            Route("/v1/jobs/{kind:str}", submit, methods=["POST"]),
            Route("/v1/shutdown", shutdown, methods=["POST"]),
            *extra_routes,
        ],
        exception_handlers={HTTPException: on_http, BadRequest: on_bad, UnknownJob: on_unknown,
                            OptiqError: on_bad, Exception: on_crash},
        lifespan=lifespan,
    )
    return Guard(app, api_key, activity or Activity())
