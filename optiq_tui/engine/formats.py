"""How a model wants its conversation written, and how its output is split.

* ``harmony`` for gpt-oss: openai-harmony renders the prompt and parses the
  channels; effort low/medium/high goes into the system message.
* ``think`` for templates with ``<think>`` blocks (Qwen3, DeepSeek-R1): the
  tokenizer's template renders, :class:`ThinkSplitter` splits; where the
  template has an ``enable_thinking`` switch, effort on/off drives it.
* ``template`` for every other chat template; ``none`` when there is none.

Messages are dicts ``{"role": "system"|"user"|"assistant", "content": str}``;
assistant messages hold only the answer (earlier reasoning is never replayed).
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from optiq_tui.engine.events import AnswerDelta, TextDelta
from optiq_tui.engine.think import CLOSE_TAG, OPEN_TAG, ThinkSplitter

THINK_EFFORTS = ("on", "off")
# Decoded prompt tail inspected to see whether the template opened a think block.
_PROMPT_TAIL_TOKENS = 16


class StreamParser(Protocol):
    """Turns generated tokens (id and detokenized piece) into text deltas."""

    def feed(self, token: int, text: str = "") -> list[TextDelta]: ...

    def finish(self) -> list[TextDelta]: ...


class _Passthrough:
    """Everything the model says is the answer."""

    def feed(self, token: int, text: str = "") -> list[TextDelta]:
        return [AnswerDelta(text)] if text else []

    def finish(self) -> list[TextDelta]:
        return []


class ChatFormat:
    """Base: renders messages to prompt ids and makes stream parsers.

    ``efforts`` lists the reasoning options the model understands, or is None
    with ``effort_unavailable_reason`` saying why there is no switch.
    """

    kind = "none"
    efforts: tuple[str, ...] | None = None
    default_effort: str | None = None
    effort_unavailable_reason: str | None = "This model has no chat template, so no reasoning control."

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def normalize_effort(self, effort: str | None) -> str | None:
        """Map any effort name (low/medium/high/on/off) onto this format's options."""
        if self.efforts is None or effort is None:
            return self.default_effort
        if effort in self.efforts:
            return effort
        if self.efforts == THINK_EFFORTS:
            return "off" if effort in ("off", "none", "low") else "on"
        return {"off": "low", "on": self.default_effort}.get(effort, self.default_effort)

    def render(self, messages: Sequence[dict], effort: str | None = None,
               tools: Sequence[dict] | None = None) -> list[int]:
        """Prompt ids; ``tools`` (OpenAI-style function tools) reach formats that can show them."""
        # No template: the plain text of the conversation, the model continues it.
        text = "\n\n".join(m["content"] for m in messages if m["content"])
        return list(self.tokenizer.encode(text))

    def new_parser(self, prompt: Sequence[int] = ()) -> StreamParser:
        return _Passthrough()


class TemplateFormat(ChatFormat):
    kind = "template"
    effort_unavailable_reason = "This model's chat template has no reasoning control."

    def _template_kwargs(self, effort: str | None) -> dict:
        return {}

    def render(self, messages: Sequence[dict], effort: str | None = None,
               tools: Sequence[dict] | None = None) -> list[int]:
        from jinja2 import TemplateError

        kwargs = self._template_kwargs(self.normalize_effort(effort))
        if tools:
            kwargs["tools"] = list(tools)
        msgs = [dict(m) for m in messages]
        try:
            return list(self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, **kwargs))
        except TemplateError:
            if not msgs or msgs[0]["role"] != "system":
                raise
        # Some templates (older Gemma, Mistral) refuse a system role: fold it into the first user turn.
        system = msgs.pop(0)["content"]
        for m in msgs:
            if m["role"] == "user":
                m["content"] = f"{system}\n\n{m['content']}"
                break
        return list(self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, **kwargs))


class ThinkFormat(TemplateFormat):
    kind = "think"

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        template = _template_text(tokenizer)
        if "enable_thinking" in template:
            self.efforts = THINK_EFFORTS
            self.default_effort = "on"
            self.effort_unavailable_reason = None
        else:
            self.effort_unavailable_reason = (
                "This model always reasons: its chat template has no switch to turn thinking off."
            )

    def _template_kwargs(self, effort: str | None) -> dict:
        if self.efforts is None:
            return {}
        return {"enable_thinking": effort != "off"}

    def new_parser(self, prompt: Sequence[int] = ()) -> StreamParser:
        # DeepSeek-R1-style templates end the prompt with "<think>\n": the stream
        # then holds only the closing tag.
        tail = self.tokenizer.decode(list(prompt[-_PROMPT_TAIL_TOKENS:])) if prompt else ""
        return ThinkSplitter(in_reasoning=tail.rfind(OPEN_TAG) > tail.rfind(CLOSE_TAG))


class HarmonyFormat(ChatFormat):
    kind = "harmony"
    efforts = ("low", "medium", "high")
    default_effort = "medium"
    effort_unavailable_reason = None

    def __init__(self, tokenizer: Any) -> None:
        from optiq_tui.engine.harmony import harmony_encoding

        super().__init__(tokenizer)
        self.encoding = harmony_encoding()
        # <|return|> and <|call|> end the assistant's turn; <|end|> only ends a
        # message (the analysis one), so generation must go on past it.
        for token in self.encoding.stop_tokens_for_assistant_actions():
            if hasattr(tokenizer, "add_eos_token"):
                tokenizer.add_eos_token(str(token))

    def render(self, messages: Sequence[dict], effort: str | None = None,
               tools: Sequence[dict] | None = None) -> list[int]:
        from optiq_tui.engine.harmony import render_prompt

        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        rest = [m for m in messages if m["role"] != "system"]
        return render_prompt(self.encoding, rest, self.normalize_effort(effort), system or None, tools)

    def new_parser(self, prompt: Sequence[int] = ()) -> StreamParser:
        from optiq_tui.engine.harmony import HarmonyParser

        return HarmonyParser(self.encoding)


def _template_text(tokenizer: Any) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # several named templates
        return "\n".join(str(t) for t in template.values())
    return template or ""


def select_format(model_type: str | None, tokenizer: Any) -> ChatFormat:
    """The chat format for a loaded model (its config's model_type and its tokenizer)."""
    if model_type == "gpt_oss":
        return HarmonyFormat(tokenizer)
    if not getattr(tokenizer, "has_chat_template", bool(_template_text(tokenizer))):
        return ChatFormat(tokenizer)
    if OPEN_TAG in _template_text(tokenizer):
        return ThinkFormat(tokenizer)
    return TemplateFormat(tokenizer)
