"""OpenAI chat messages and tools into the engine's message list.

The engine takes ``{"role", "content"}`` messages (plus ``tool_calls`` on
assistant messages and ``name`` on tool results, as chat templates and
harmony want them). Reasoning a client sends back with an assistant message
(``reasoning`` / ``reasoning_content``) is dropped: earlier turns' reasoning
never re-enters the prompt.
"""

from __future__ import annotations

import json
from typing import Any

from optiq_tui.server.openai.errors import ApiError

ROLES = ("system", "developer", "user", "assistant", "tool")


def text_of(content: Any, where: str) -> str:
    """A message's text: a string, or the text parts of a list (other parts are refused)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text", "output_text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ApiError(400, f"{where}: only text content is supported, not {kind!r}", param=where)
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ApiError(400, f"{where}: content must be a string or a list of text parts", param=where)


def _arguments(raw: Any) -> Any:
    """Arguments as chat templates expect them (an object); a string that is not JSON stays a string."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def engine_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name, for the tool results that follow
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in ROLES:
            raise ApiError(400, f"{where}.role must be one of {', '.join(ROLES)}", param=f"{where}.role")
        text = text_of(m.get("content"), f"{where}.content")
        if role == "developer":
            role = "system"  # the newer name for the same thing
        message: dict[str, Any] = {"role": role, "content": text}
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for call in m["tool_calls"]:
                function = call.get("function") if isinstance(call, dict) else None
                if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                    raise ApiError(400, f"{where}.tool_calls: each needs function.name", param=f"{where}.tool_calls")
                names[str(call.get("id"))] = function["name"]
                calls.append({"id": call.get("id"), "type": "function",
                              "function": {"name": function["name"], "arguments": _arguments(function.get("arguments"))}})
            message["tool_calls"] = calls
        if role == "tool":
            message["name"] = m.get("name") or names.get(str(m.get("tool_call_id")), "tool")
            message["tool_call_id"] = m.get("tool_call_id")
        out.append(message)
    return out


def chosen_tools(tools: list[dict] | None, tool_choice: Any) -> list[dict] | None:
    """The tools the model is shown: none for ``"none"``, the named one for a specific choice."""
    if tool_choice == "required":
        # Nothing here forces a call yet (no constrained start of the assistant turn): refuse, never pretend.
        raise ApiError(400, 'tool_choice "required" is not supported by this server; use "auto" or name a function',
                       param="tool_choice")
    if not tools or tool_choice == "none":
        return None
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or \
                not isinstance((tool.get("function") or {}).get("name"), str):
            raise ApiError(400, f"tools.{i}: only function tools with a function.name are supported",
                           param=f"tools.{i}")
    if isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        picked = [t for t in tools if t["function"]["name"] == name]
        if not picked:
            raise ApiError(400, f"tool_choice names {name!r}, which is not in tools", param="tool_choice")
        return picked
    return tools


def responses_tools(tools: list[dict] | None) -> list[dict] | None:
    """Responses-shape function tools ({type, name, description, parameters}) in the chat shape."""
    if not tools:
        return tools
    out = []
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("name"), str):
            raise ApiError(400, f"tools.{i}: only function tools with a name are supported", param=f"tools.{i}")
        out.append({"type": "function", "function": {k: tool[k] for k in ("name", "description", "parameters")
                                                      if tool.get(k) is not None}})
    return out


def responses_tool_choice(choice: Any) -> Any:
    """A Responses ``tool_choice`` ({type: function, name}) in the chat shape."""
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice
