"""Following an engine job from a request: server-sent events, and a client that goes away.

The job runs on the engine's MLX thread and belongs to the engine; the request
only watches it. When the client disconnects (checked between event batches,
which are at most ``POLL_S`` apart), the job is cancelled: the generation
stops at its next token check.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, AsyncIterator

import anyio
from starlette.requests import Request

from optiq_tui.engine.completion import CompletionDone, CompletionStarted
from optiq_tui.engine.jobs import JobInfo
from optiq_tui.server.openai.errors import ApiError

if TYPE_CHECKING:
    from optiq_tui.engine.service import EngineService

# Longest wait for a job's events before looking at the client again.
POLL_S = 0.25


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {data if isinstance(data, str) else json.dumps(data)}\n\n".encode()


def failure(info: JobInfo) -> ApiError:
    """The error a request gets for a job that ended without an answer."""
    message = info.error or f"the generation was {info.state}"
    if "context" in message:
        return ApiError(400, message, param="messages", code="context_length_exceeded")
    if "needs about" in message:  # the loader's memory check
        return ApiError(503, message, param="model", code="model_too_large")
    return ApiError(500, message)


class JobFollower:
    """Reads one job's events for one request; cancels the job when the request's client leaves."""

    def __init__(self, service: "EngineService", request: Request, job_id: int) -> None:
        self.service, self.request, self.job_id = service, request, job_id
        self.after = 0
        self.started: CompletionStarted | None = None
        # The result, as soon as the answer ended (its job may go on driving a batch for others).
        self.done: dict[str, Any] | None = None
        self.over = False
        self._held: list[Any] = []

    async def _batch(self) -> tuple[list[Any], bool]:
        """New events (up to the result), and whether the answer is over (result sent or job ended)."""
        batch, ended = await anyio.to_thread.run_sync(self.service.events, self.job_id, self.after, POLL_S)
        events = []
        for seq, event in batch:
            self.after = seq
            if isinstance(event, CompletionDone):
                self.done = event.result
                self.over = True
                return events, True
            events.append(event)
        if not ended and await self.request.is_disconnected():
            self.cancel()
        self.over = ended
        return events, ended

    def cancel(self) -> None:
        if self.done is None and not self.service.job(self.job_id).ended:
            self.service.cancel(self.job_id)

    async def start(self) -> CompletionStarted:
        """Wait through loading to the first generated event; raises the job's error if it ended first."""
        while self.started is None:
            events, ended = await self._batch()
            for i, event in enumerate(events):
                if isinstance(event, CompletionStarted):
                    self.started, self._held = event, events[i + 1:]
                    break
            else:
                if ended:
                    self.outcome()  # raises the job's error
                    raise ApiError(500, "the answer ended before it started")
        return self.started

    async def batches(self) -> AsyncIterator[list[Any]]:
        """Event batches after the start, until the answer is over (then read :meth:`outcome`)."""
        try:
            if self._held:
                held, self._held = self._held, []
                yield held
            while not self.over:
                events, _over = await self._batch()
                if events:
                    yield events
        finally:
            self.cancel()  # the response ended early (client gone, server stopping): stop generating

    def outcome(self) -> dict[str, Any]:
        """The result of an answer that is over; raises the job's error when there is none."""
        if self.done is not None:
            return self.done
        info = self.service.job(self.job_id)
        if info.state != "done" or info.result is None:
            raise failure(info)
        return info.result

    async def result(self) -> dict[str, Any]:
        """Wait for the result (non-streaming requests)."""
        await self.start()
        while not self.over:
            await self._batch()
        return self.outcome()


def effort_headers(started_or_result: Any) -> dict[str, str]:
    """``x-optiq-effort``: the effort the prompt carries, or how an asked one was not honoured."""
    note = getattr(started_or_result, "effort_note", None)
    effort = getattr(started_or_result, "effort", None)
    if isinstance(started_or_result, dict):
        note, effort = started_or_result.get("effort_note"), started_or_result.get("effort")
    value = note or effort
    return {"x-optiq-effort": value} if value else {}


def sampler_options(*, temperature: float | None, top_p: float | None, max_tokens: int | None,
                    seed: int | None) -> dict[str, Any]:
    """The sampler values a request set (the model's own defaults fill the rest); 400 on a bad one."""
    from optiq_tui.engine.sampling import SamplerSettings
    from optiq_tui.progress import OptiqError

    given = {k: v for k, v in {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens,
                               "seed": seed}.items() if v is not None}
    try:
        SamplerSettings(**given)
    except OptiqError as exc:
        raise ApiError(400, str(exc)) from None
    return given


async def submit_completion(service: "EngineService", request: Request, model: str, **args: Any) -> JobFollower:
    """Start a ``complete`` job on the engine (it shows in the job list) after the model checks."""
    from optiq_tui.server.openai.models import check_fits, find_model

    info = await anyio.to_thread.run_sync(find_model, model)
    await anyio.to_thread.run_sync(check_fits, service, info)
    job = await anyio.to_thread.run_sync(lambda: service.submit("complete", model=str(info.name), **args))
    return JobFollower(service, request, job.id)


def usage_numbers(result: dict[str, Any]) -> tuple[int, int, int, int]:
    """(prompt, cached prompt, completion, reasoning) token counts of a finished completion."""
    stats = result["stats"]
    prompt = int(result["prompt_tokens"])
    return prompt, max(0, prompt - int(stats["prompt_tokens"])), int(stats["gen_tokens"]), \
        int(stats["reasoning_tokens"])
