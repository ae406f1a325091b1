"""POST /v1/chat/completions, streamed (server-sent events) and not.

Reasoning (harmony ``analysis``, ``<think>`` blocks) never goes into
``content``: it is sent as both ``reasoning`` and ``reasoning_content``, the
two names clients read. The objects are validated by the ``openai`` package's
own types before they leave.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, AsyncIterator

from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from optiq_tui.engine.completion import ToolCallDelta
from optiq_tui.engine.events import AnswerDelta, ReasoningDelta
from optiq_tui.server.openai.errors import ApiError, api_route, parse_body
from optiq_tui.server.openai.sse import (
    effort_headers,
    sampler_options,
    sse,
    submit_completion,
    usage_numbers,
)
from optiq_tui.server.openai.tools import chosen_tools, engine_messages

if TYPE_CHECKING:
    from optiq_tui.engine.service import EngineService


class ChatRequest(BaseModel):
    """The fields this server acts on; others (user, logprobs, ...) are accepted and ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")
    model: str
    messages: list[dict]
    stream: bool = False
    stream_options: dict | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    reasoning_effort: str | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    n: int | None = None


def _usage(result: dict[str, Any]) -> dict[str, Any]:
    prompt, cached, completion, reasoning = usage_numbers(result)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning}}


def _tool_call(call: dict[str, str]) -> dict[str, Any]:
    return {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}


def _deltas(events: list[Any]) -> list[dict[str, Any]]:
    """Chunk deltas for a batch of engine events, consecutive text of one kind joined."""
    out: list[dict[str, Any]] = []
    for event in events:
        if type(event) is ReasoningDelta:
            delta = {"reasoning": event.text, "reasoning_content": event.text}
        elif type(event) is AnswerDelta:
            delta = {"content": event.text}
        elif isinstance(event, ToolCallDelta):
            call: dict[str, Any] = {"index": event.index, "function": {"arguments": event.arguments}}
            if event.id is not None:
                call.update(id=event.id, type="function")
                call["function"]["name"] = event.name
            out.append({"tool_calls": [call]})
            continue
        else:
            continue
        if out and out[-1].keys() == delta.keys() and "tool_calls" not in delta:
            out[-1] = {k: out[-1][k] + delta[k] for k in delta}
        else:
            out.append(delta)
    return out


def chat_completions_route(service: "EngineService"):
    @api_route
    async def chat_completions(request: Request) -> Response:
        req = await parse_body(request, ChatRequest)
        if req.n not in (None, 1):
            raise ApiError(400, "n: only one choice per request is supported", param="n")
        max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        sampler = sampler_options(temperature=req.temperature, top_p=req.top_p, max_tokens=max_tokens,
                                  seed=req.seed)
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        follower = await submit_completion(
            service, request, req.model, messages=engine_messages(req.messages),
            tools=chosen_tools(req.tools, req.tool_choice), sampler=sampler, effort=req.reasoning_effort, stop=stop)
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        headers = {"x-optiq-job": str(follower.job_id)}

        def chunk(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": req.model,
                    "choices": choices, **extra}
            return sse(ChatCompletionChunk.model_validate(body).model_dump(mode="json", exclude_unset=True))

        if not req.stream:
            result = await follower.result()
            if result["finish_reason"] == "error":
                raise ApiError(500, result["error"] or "the generation failed")
            message: dict[str, Any] = {"role": "assistant", "content": result["answer"] or None}
            if result["reasoning"]:
                message.update(reasoning=result["reasoning"], reasoning_content=result["reasoning"])
            if result["tool_calls"]:
                message["tool_calls"] = [_tool_call(c) for c in result["tool_calls"]]
            elif message["content"] is None:
                message["content"] = ""
            body = {"id": ident, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "message": message, "finish_reason": result["finish_reason"]}],
                    "usage": _usage(result)}
            return JSONResponse(ChatCompletion.model_validate(body).model_dump(mode="json", exclude_unset=True),
                                headers={**headers, **effort_headers(result)})

        started = await follower.start()
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[bytes]:
            yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""}}])
            async for batch in follower.batches():
                for delta in _deltas(batch):
                    yield chunk([{"index": 0, "delta": delta}])
            try:
                result = follower.outcome()
                if result["finish_reason"] == "error":
                    raise ApiError(500, result["error"] or "the generation failed")
            except ApiError as error:
                yield sse(error.body())
            else:
                yield chunk([{"index": 0, "delta": {}, "finish_reason": result["finish_reason"]}])
                if include_usage:
                    yield chunk([], usage=_usage(result))
            yield sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**headers, **effort_headers(started), "cache-control": "no-cache"})

    return chat_completions
