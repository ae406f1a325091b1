"""POST /v1/responses: text or message input, ``reasoning.effort``, streamed events, follow-ups.

A response's conversation (input and answer, never its reasoning) is kept in
this engine's memory under its id, so ``previous_response_id`` continues it.
Reasoning comes back as a ``reasoning`` output item (``reasoning_text``
content), the answer as a ``message`` item; streamed events are checked
against the ``openai`` package's event types.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, AsyncIterator

from openai.types import responses as rt
from pydantic import BaseModel, ConfigDict
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from optiq_tui.engine.completion import ToolCallDelta
from optiq_tui.engine.events import AnswerDelta, ReasoningDelta
from optiq_tui.server.openai.errors import ApiError, api_route, parse_body
from optiq_tui.server.openai.sse import effort_headers, sampler_options, sse, submit_completion, usage_numbers
from optiq_tui.server.openai.tools import chosen_tools, engine_messages, responses_tool_choice, responses_tools

if TYPE_CHECKING:
    from optiq_tui.engine.service import EngineService

# Conversations kept for previous_response_id, oldest dropped first.
KEEP_RESPONSES = 512
_EVENTS: dict[str, type[BaseModel]] = {
    "response.created": rt.ResponseCreatedEvent,
    "response.in_progress": rt.ResponseInProgressEvent,
    "response.completed": rt.ResponseCompletedEvent,
    "response.output_item.added": rt.ResponseOutputItemAddedEvent,
    "response.output_item.done": rt.ResponseOutputItemDoneEvent,
    "response.content_part.added": rt.ResponseContentPartAddedEvent,
    "response.content_part.done": rt.ResponseContentPartDoneEvent,
    "response.output_text.delta": rt.ResponseTextDeltaEvent,
    "response.output_text.done": rt.ResponseTextDoneEvent,
    "response.reasoning_text.delta": rt.ResponseReasoningTextDeltaEvent,
    "response.reasoning_text.done": rt.ResponseReasoningTextDoneEvent,
    "response.function_call_arguments.delta": rt.ResponseFunctionCallArgumentsDeltaEvent,
    "response.function_call_arguments.done": rt.ResponseFunctionCallArgumentsDoneEvent,
}


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    model: str
    input: str | list[dict]
    instructions: str | None = None
    reasoning: dict | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    max_output_tokens: int | None = None
    previous_response_id: str | None = None
    store: bool = True
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None


def _input_messages(value: str | list[dict]) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    messages = []
    for i, item in enumerate(value):
        kind = item.get("type", "message")
        if kind == "reasoning":
            continue  # earlier reasoning never re-enters the prompt
        if kind == "function_call":
            # consecutive calls belong to one assistant turn, as chat templates and harmony render them
            call = {"id": item.get("call_id"), "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments")}}
            if messages and messages[-1]["role"] == "assistant" and messages[-1].get("tool_calls"):
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": item.get("output")})
        elif kind == "message":
            messages.append({"role": item.get("role"), "content": item.get("content")})
        else:
            raise ApiError(400, f"input.{i}: items of type {kind!r} are not supported here", param=f"input.{i}")
    return engine_messages(messages)


def _calls(ident: str, calls: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{"id": f"fc_{ident}_{i}", "type": "function_call", "call_id": c["id"], "name": c["name"],
             "arguments": c["arguments"], "status": "completed"} for i, c in enumerate(calls)]


def _items(ident: str, reasoning: str, answer: str, status: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if reasoning:
        out.append({"id": f"rs_{ident}", "type": "reasoning", "summary": [], "status": status,
                    "content": [{"type": "reasoning_text", "text": reasoning}]})
    out.append({"id": f"msg_{ident}", "type": "message", "role": "assistant", "status": status,
                "content": [{"type": "output_text", "text": answer, "annotations": []}]})
    return out


def responses_route(service: "EngineService"):
    kept: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    @api_route
    async def responses(request: Request) -> Response:
        req = await parse_body(request, ResponsesRequest)
        history: list[dict[str, Any]] = []
        if req.previous_response_id is not None:
            if req.previous_response_id not in kept:
                raise ApiError(404, f"no response {req.previous_response_id!r} in this engine's memory",
                               param="previous_response_id")
            history = kept[req.previous_response_id]
        new = _input_messages(req.input)
        system = [{"role": "system", "content": req.instructions}] if req.instructions else []
        effort = (req.reasoning or {}).get("effort")
        if effort is not None and not isinstance(effort, str):
            raise ApiError(400, "reasoning.effort must be a string", param="reasoning.effort")
        tools = chosen_tools(responses_tools(req.tools), responses_tool_choice(req.tool_choice))
        sampler = sampler_options(temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_output_tokens,
                                  seed=None)
        follower = await submit_completion(service, request, req.model, messages=system + history + new,
                                           tools=tools, sampler=sampler, effort=effort, stop=None)
        ident, created = uuid.uuid4().hex, time.time()
        headers = {"x-optiq-job": str(follower.job_id)}

        def response(status: str, output: list[dict], result: dict[str, Any] | None) -> dict[str, Any]:
            body: dict[str, Any] = {"id": f"resp_{ident}", "object": "response", "created_at": created,
                                    "model": req.model, "status": status, "output": output,
                                    "parallel_tool_calls": False, "tool_choice": req.tool_choice or "auto", "tools": req.tools or [],
                                    "previous_response_id": req.previous_response_id}
            if result is not None:
                prompt, cached, completion, reasoning = usage_numbers(result)
                body["usage"] = {"input_tokens": prompt,
                                 "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
                                 "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": reasoning},
                                 "total_tokens": prompt + completion}
                if result["finish_reason"] == "length":
                    body["status"], body["incomplete_details"] = "incomplete", {"reason": "max_output_tokens"}
            return rt.Response.model_validate(body).model_dump(mode="json", exclude_unset=True)

        def finish(result: dict[str, Any]) -> dict[str, Any]:
            if result["finish_reason"] == "error":
                raise ApiError(500, result["error"] or "the generation failed")
            if req.store:
                turn: dict[str, Any] = {"role": "assistant", "content": result["answer"]}
                if result["tool_calls"]:
                    turn["tool_calls"] = [{"id": c["id"], "type": "function",
                                           "function": {"name": c["name"], "arguments": c["arguments"]}}
                                          for c in result["tool_calls"]]
                kept[f"resp_{ident}"] = [*history, *new, *engine_messages([turn])]
                while len(kept) > KEEP_RESPONSES:
                    kept.popitem(last=False)
            output = _items(ident, result["reasoning"], result["answer"], "completed")
            if result["tool_calls"]:
                output = [o for o in output if o["type"] == "reasoning" or result["answer"]]
                output += _calls(ident, result["tool_calls"])
            return response("completed", output, result)

        if not req.stream:
            result = await follower.result()
            return JSONResponse(finish(result), headers={**headers, **effort_headers(result)})

        started = await follower.start()

        async def events() -> AsyncIterator[bytes]:
            seq = 0

            def event(kind: str, **fields: Any) -> bytes:
                nonlocal seq
                body = _EVENTS[kind].model_validate({"type": kind, "sequence_number": seq, **fields})
                seq += 1
                return sse(body.model_dump(mode="json", exclude_unset=True), kind)

            yield event("response.created", response=response("in_progress", [], None))
            yield event("response.in_progress", response=response("in_progress", [], None))
            open_kind: str | None = None  # "reasoning" | "message" | "function_call"
            texts = {"reasoning": "", "message": ""}
            calls: list[dict[str, str]] = []  # as the engine reports them: id, name, arguments
            index = -1

            def item(kind: str, status: str) -> dict[str, Any]:
                if kind == "function_call":
                    return {**_calls(ident, calls)[-1], "status": status}
                items = _items(ident, texts["reasoning"] or " ", texts["message"], status)
                return items[0] if kind == "reasoning" else items[-1]

            def close() -> list[bytes]:
                if open_kind == "function_call":
                    done = item("function_call", "completed")
                    return [event("response.function_call_arguments.done", item_id=done["id"], output_index=index,
                                  arguments=done["arguments"]),
                            event("response.output_item.done", output_index=index, item=done)]
                if open_kind == "reasoning":
                    return [event("response.reasoning_text.done", item_id=f"rs_{ident}", output_index=index,
                                  content_index=0, text=texts["reasoning"]),
                            event("response.output_item.done", output_index=index, item=item("reasoning", "completed"))]
                if open_kind == "message":
                    part = {"type": "output_text", "text": texts["message"], "annotations": []}
                    return [event("response.output_text.done", item_id=f"msg_{ident}", output_index=index,
                                  content_index=0, text=texts["message"], logprobs=[]),
                            event("response.content_part.done", item_id=f"msg_{ident}", output_index=index,
                                  content_index=0, part=part),
                            event("response.output_item.done", output_index=index, item=item("message", "completed"))]
                return []

            def open_item(kind: str) -> list[bytes]:
                nonlocal open_kind, index
                out = close()
                open_kind, index = kind, index + 1
                added = item(kind, "in_progress")
                if kind != "function_call":
                    added["content"] = []
                out.append(event("response.output_item.added", output_index=index, item=added))
                if kind == "message":
                    out.append(event("response.content_part.added", item_id=f"msg_{ident}", output_index=index,
                                     content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
                return out

            async for batch in follower.batches():
                for e in batch:
                    if isinstance(e, ToolCallDelta):
                        if e.id is not None:  # a new call: its own output item
                            calls.append({"id": e.id, "name": e.name or "", "arguments": ""})
                            for b in open_item("function_call"):
                                yield b
                        if e.arguments and calls:
                            calls[-1]["arguments"] += e.arguments
                            yield event("response.function_call_arguments.delta", item_id=f"fc_{ident}_{len(calls) - 1}",
                                        output_index=index, delta=e.arguments)
                        continue
                    if calls:
                        continue  # text after the calls began is not part of this turn's output items
                    kind = "reasoning" if type(e) is ReasoningDelta else "message" if type(e) is AnswerDelta else None
                    if kind is None or (kind == "reasoning" and texts["message"]):
                        continue  # reasoning after the answer began stays out of the answer item
                    if open_kind != kind:
                        for b in open_item(kind):
                            yield b
                    texts[kind] += e.text
                    if kind == "reasoning":
                        yield event("response.reasoning_text.delta", item_id=f"rs_{ident}", output_index=index,
                                    content_index=0, delta=e.text)
                    else:
                        yield event("response.output_text.delta", item_id=f"msg_{ident}", output_index=index,
                                    content_index=0, delta=e.text, logprobs=[])
            try:
                final = finish(follower.outcome())
            except ApiError as exc:
                yield sse({"type": "error", "sequence_number": seq, **exc.body()["error"]}, "error")
                return
            if open_kind != "message" and not calls:
                for b in open_item("message"):
                    yield b
            for b in close():
                yield b
            yield event("response.completed", response=final)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={**headers, **effort_headers(started), "cache-control": "no-cache"})

    return responses
