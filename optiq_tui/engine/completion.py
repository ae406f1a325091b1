"""One completion of a whole message list: the job behind the OpenAI-compatible API.

Generation is :class:`ChatSession`'s (prompt cache across requests, seeded
sampling, stats, cancel between tokens); this module adds what an API request
carries beyond a chat turn: the full message list with tools and tool
results, stop strings, an effort that is reported when the model cannot honour
it, and tool calls found in the stream (harmony messages to ``functions.x``;
the tool-call tags mlx-lm's tokenizer wrapper knows for other templates).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

from optiq_tui.engine.events import AnswerDelta, Finished, GenStats, ReasoningDelta, TextDelta
from optiq_tui.engine.formats import StreamParser
from optiq_tui.engine.sampling import resolve_sampler
from optiq_tui.engine.session import ChatSession
from optiq_tui.engine.think import partial_tag_suffix
from optiq_tui.progress import Cancelled

if TYPE_CHECKING:
    from optiq_tui.engine.formats import ChatFormat
    from optiq_tui.engine.loader import LoadedModel

log = logging.getLogger("optiq.engine")


@dataclass(frozen=True)
class CompletionStarted:
    """The model is loaded and the prompt rendered; ``effort_note`` says how an asked effort was not honoured."""

    prompt_tokens: int
    effort: str | None
    effort_note: str | None = None


@dataclass(frozen=True)
class ToolCallDelta:
    """A tool call as it streams: the first delta of call ``index`` has its id and name."""

    index: int
    id: str | None
    name: str | None
    arguments: str


def effort_choice(fmt: "ChatFormat", asked: str | None) -> tuple[str | None, str | None]:
    """The effort the prompt will carry, and a note when that is not what was asked."""
    used = fmt.normalize_effort(asked)
    if asked is None or (fmt.efforts is not None and asked in fmt.efforts):
        return used, None
    if fmt.efforts is None:
        return used, f"ignored ({fmt.effort_unavailable_reason})"
    return used, f"{used} (asked {asked!r}; this model takes {', '.join(fmt.efforts)})"


class MessagesSession(ChatSession):
    """A ChatSession whose prompt is rendered per request from a whole message list.

    Kept by the engine between requests, so a follow-up that repeats the
    conversation only processes its new tokens (the KV cache's common prefix).
    """

    def __init__(self, loaded: "LoadedModel") -> None:
        super().__init__(loaded)
        self.prompt: list[int] = []
        self.wrap_parser: Callable[[StreamParser], StreamParser] | None = None

    def _render(self, user_text: str, effort: str | None, skip: int = 0) -> list[int]:
        return self.prompt

    def _new_parser(self, prompt: list[int]) -> StreamParser:
        parser = super()._new_parser(prompt)
        return self.wrap_parser(parser) if self.wrap_parser else parser


def _call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class HarmonyToolCalls:
    """Harmony messages addressed to ``functions.NAME`` (commentary or analysis) become tool calls."""

    def __init__(self, inner: Any, on_call: Callable[[ToolCallDelta], None]) -> None:
        self.inner, self.on_call = inner, on_call
        self.count = 0
        self._open = False

    def feed(self, token: int, text: str = "") -> list[TextDelta]:
        deltas = self.inner.feed(token, text)
        recipient = self.inner.recipient or ""
        if recipient.startswith("functions."):
            if not self._open:
                self._open = True
                self.on_call(ToolCallDelta(self.count, _call_id(), recipient.split(".", 1)[1], ""))
            piece = "".join(d.text for d in deltas)
            if piece:
                self.on_call(ToolCallDelta(self.count, None, None, piece))
            return []
        self._close()
        return deltas

    def finish(self) -> list[TextDelta]:
        self._close()
        return self.inner.finish()

    def _close(self) -> None:
        if self._open:
            self._open = False
            self.count += 1


class TaggedToolCalls:
    """Answer text between the template's tool-call tags goes to mlx-lm's parser for that template.

    The tags and parsers are mlx-lm's (``TokenizerWrapper.tool_call_start`` /
    ``tool_parser``); the scan over streamed text pieces, which may split a tag,
    is ours. A call that does not parse stays in the answer, not lost.
    """

    def __init__(self, inner: StreamParser, tokenizer: Any, tools: Sequence[dict],
                 on_call: Callable[[ToolCallDelta], None]) -> None:
        self.inner, self.on_call, self.tools = inner, on_call, list(tools)
        self.start, self.end = tokenizer.tool_call_start, tokenizer.tool_call_end
        self.parse = tokenizer.tool_parser
        self.count = 0
        self._pending = ""
        self._in_call = False

    def feed(self, token: int, text: str = "") -> list[TextDelta]:
        return self._scan(self.inner.feed(token, text))

    def finish(self) -> list[TextDelta]:
        out = self._scan(self.inner.finish())
        if self._in_call:
            out += self._emit_call(self._pending)  # cut off by max_tokens: parse what came
        elif self._pending:
            out.append(AnswerDelta(self._pending))
        self._pending, self._in_call = "", False
        return out

    def _scan(self, deltas: list[TextDelta]) -> list[TextDelta]:
        out: list[TextDelta] = []
        for delta in deltas:
            if type(delta) is not AnswerDelta:
                out.append(delta)
                continue
            self._pending += delta.text
            while True:
                tag = self.end if self._in_call else self.start
                at = self._pending.find(tag)
                if at == -1:
                    break
                before, self._pending = self._pending[:at], self._pending[at + len(tag):]
                if self._in_call:
                    out += self._emit_call(before)
                elif before:
                    out.append(AnswerDelta(before))
                self._in_call = not self._in_call
            if not self._in_call:
                keep = partial_tag_suffix(self._pending, self.start)
                if len(self._pending) > keep:
                    out.append(AnswerDelta(self._pending[: len(self._pending) - keep]))
                    self._pending = self._pending[len(self._pending) - keep:]
        return out

    def _emit_call(self, text: str) -> list[TextDelta]:
        try:
            parsed = self.parse(text, self.tools)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("a tool call did not parse (%s); it stays in the answer", exc)
            return [AnswerDelta(f"{self.start}{text}{self.end}")]
        for call in parsed if isinstance(parsed, list) else [parsed]:
            arguments = call.get("arguments", {})
            arguments = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            self.on_call(ToolCallDelta(self.count, call.get("id") or _call_id(), call["name"], arguments))
            self.count += 1
        return []


class StopStrings:
    """Cuts the answer at the first stop string, holding back text that may be one's start."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hit = False
        self._pending = ""

    def feed(self, text: str) -> str:
        if self.hit or not self.stops:
            return "" if self.hit else text
        self._pending += text
        found = [i for i in (self._pending.find(s) for s in self.stops) if i != -1]
        if found:
            self.hit = True
            out, self._pending = self._pending[: min(found)], ""
            return out
        keep = max(partial_tag_suffix(self._pending, s) for s in self.stops)
        out, self._pending = self._pending[: len(self._pending) - keep], self._pending[len(self._pending) - keep:]
        return out

    def finish(self) -> str:
        out, self._pending = ("" if self.hit else self._pending), ""
        return out


@dataclass(frozen=True)
class CompletionDone:
    """The request's result, sent as soon as its own generation ends (a batch may go on for others)."""

    result: dict


class Completion:
    """One request's state, whichever loop generates it: alone through ChatSession, or in a batch."""

    def __init__(self, loaded: "LoadedModel", emit: Callable[[Any], None], cancel: threading.Event, *,
                 messages: list, tools: list | None, sampler: dict | None, effort: str | None,
                 stop: list | None) -> None:
        self.loaded, self.emit, self.cancel, self.tools = loaded, emit, cancel, tools
        fmt = loaded.format
        self.effort, self.note = effort_choice(fmt, effort)
        if self.note:
            log.warning("%s: reasoning effort %s", loaded.info.name, self.note)
        self.prompt = fmt.render(messages, self.effort, tools or None)
        options = dict(sampler or {})
        options.setdefault("max_tokens", loaded.context_length)  # the API's default: until the context is full
        self.settings, _source = resolve_sampler(loaded.info.path, **options)
        self.calls: dict[int, dict[str, str]] = {}
        self.stops = StopStrings(stop or [])
        self.stopped = threading.Event()
        self.answer: list[str] = []
        self.reasoning: list[str] = []
        self.tokens: list[int] = []  # generated so far, and the detokenized characters fed to the parser
        self.shown = 0
        self.parser: StreamParser | None = None
        self.handing_over = False
        self.finished: Finished | None = None
        # Figures of the part generated alone, when the request moved into a batch.
        self.base_stats: GenStats | None = None
        self._started = False
        self._done = False

    def wrap(self, parser: StreamParser) -> StreamParser:
        """The format's parser with tool-call extraction, recording what it was fed."""
        if self.tools and self.loaded.format.kind == "harmony":
            parser = HarmonyToolCalls(parser, self.on_call)
        elif self.tools and getattr(self.loaded.tokenizer, "has_tool_calling", False):
            parser = TaggedToolCalls(parser, self.loaded.tokenizer, self.tools, self.on_call)
        self.parser = _Recorder(parser, self)
        return self.parser

    def begin(self) -> None:
        # At the first thing generation produces, i.e. after the context check: a prompt
        # that does not fit fails the job before this.
        if not self._started:
            self._started = True
            self.emit(CompletionStarted(len(self.prompt), self.effort, self.note))

    def on_call(self, delta: ToolCallDelta) -> None:
        self.begin()
        call = self.calls.setdefault(delta.index, {"id": delta.id or "", "name": delta.name or "", "arguments": ""})
        call["arguments"] += delta.arguments
        self.emit(delta)

    def take(self, event: Any) -> None:
        """An event of the generation: stop strings applied, text kept, then sent on."""
        self.begin()
        if isinstance(event, Finished):
            rest = self.stops.finish()
            if rest:
                self.answer.append(rest)
                self.emit(AnswerDelta(rest))
            reason = "stop" if self.stopped.is_set() and not self.cancel.is_set() else event.reason
            if reason == "stop" and self.calls:
                reason = "tool_calls"
            event = self.finished = Finished(reason, event.stats, event.error)  # type: ignore[arg-type]
        elif type(event) is AnswerDelta:
            text = self.stops.feed(event.text)
            if self.stops.hit:
                self.stopped.set()
            if not text:
                return
            event = AnswerDelta(text)
            self.answer.append(text)
        elif type(event) is ReasoningDelta:
            self.reasoning.append(event.text)
        self.emit(event)

    def result(self) -> dict[str, Any]:
        """The request's result; sent once as :class:`CompletionDone`, so its client need not wait for its job."""
        assert self.finished is not None
        out = {"model": self.loaded.info.name, "format": self.loaded.format.kind, "effort": self.effort,
               "effort_note": self.note, "answer": "".join(self.answer), "reasoning": "".join(self.reasoning),
               "tool_calls": [self.calls[i] for i in sorted(self.calls)], "finish_reason": self.finished.reason,
               "error": self.finished.error, "prompt_tokens": len(self.prompt),
               "stats": asdict(self.finished.stats)}
        if not self._done:
            self._done = True
            self.emit(CompletionDone(out))
        return out


class _Recorder:
    """Passes tokens to the parser, counting them; when the request moves into a batch, it is not finished."""

    def __init__(self, inner: StreamParser, owner: Completion) -> None:
        self.inner, self.owner = inner, owner

    def feed(self, token: int, text: str = "") -> list[TextDelta]:
        self.owner.tokens.append(token)
        self.owner.shown += len(text)
        return self.inner.feed(token, text)

    def finish(self) -> list[TextDelta]:
        return [] if self.owner.handing_over else self.inner.finish()


class _Any:
    """Set when any of the events is (cancel, stop string reached, moving into a batch): what generate checks."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)


def complete_messages(session: MessagesSession, emit: Callable[[Any], None], cancel: threading.Event, *,
                      adopt: Callable[[], list] | None = None, **request: Any) -> dict[str, Any]:
    """Answer a request's messages alone; when others queue meanwhile, go on together in a batch.

    Events: CompletionStarted, text deltas, ToolCallDelta, StatsUpdate, Finished, CompletionDone.
    """
    completion = Completion(session.loaded, emit, cancel, **request)
    session.prompt = completion.prompt
    session.wrap_parser = completion.wrap
    handover = threading.Event()
    others: list = []
    try:
        for event in session.generate("", completion.settings, completion.effort,
                                      _Any(cancel, completion.stopped, handover)):  # type: ignore[arg-type]
            if handover.is_set() and isinstance(event, Finished):
                if event.reason == "cancelled" and not cancel.is_set() and not completion.stopped.is_set():
                    completion.base_stats = event.stats  # broken off here: the batch goes on
                    continue
                # It ended by itself at that very token: finish the parse the handover held back.
                completion.handing_over = False
                for delta in completion.parser.finish() if completion.parser else []:
                    completion.take(delta)
            completion.take(event)
            if adopt is not None and not handover.is_set() and type(event) in (AnswerDelta, ReasoningDelta) \
                    and not cancel.is_set():
                others = adopt()
                if others:
                    completion.handing_over = True
                    handover.set()
    finally:
        session.turns.clear()  # the client sends the whole conversation each time
        session.wrap_parser = None
    if others:
        from optiq_tui.engine.batching import run_batch

        session.reset()  # its KV cache is not the batch's
        run_batch(session.loaded, None if completion.finished else completion, others, adopt)
    if cancel.is_set():
        raise Cancelled()
    return completion.result()
