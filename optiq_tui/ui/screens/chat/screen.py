"""The chat screen: stream a model's reasoning and answer, with live stats.

The engine loads the model and answers (a "load" job, then a "chat" job per
turn, which the engine saves into the conversation whether or not this screen
is still there); the stream pump (streaming.py) brings the tokens back in
paced batches, and the turn actions (turns.py) edit, copy and take back turns.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from functools import partial
from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.timer import Timer
from textual.widgets import Footer, Input, Label, ProgressBar

from optiq_tui.engine.jobs import JobInfo
from optiq_tui.progress import Log, Progress
from optiq_tui.settings import Settings
from optiq_tui.ui.screens.base import JobScreen
from optiq_tui.ui.screens.chat.streaming import StreamPump
from optiq_tui.ui.screens.chat.turns import TurnActions
from optiq_tui.ui.widgets.chat_message import ChatMessage
from optiq_tui.ui.widgets.effort_switch import EffortSwitch
from optiq_tui.ui.widgets.reasoning_panel import ReasoningPanel
from optiq_tui.ui.widgets.stats_line import StatsLine
from optiq_tui.ui.widgets.stream_batch import Batch, FlushPacer, StreamBatch, engine_priority
from optiq_tui.ui.widgets.transcript import Transcript


class ChatScreen(StreamPump, TurnActions, JobScreen):
    """Chat with one model; Esc stops a generation, then goes back."""

    CSS_PATH = "chat.tcss"
    BUSY_TEXT = "Still answering: Esc stops it."

    BINDINGS = [
        # Footer order is priority order: at 80 columns it shows the first six; every key is in ^p too.
        Binding("escape", "stop_or_back", "Stop/Back"),
        Binding("ctrl+y", "copy_answer", "Copy", tooltip="Copy the last finished answer", priority=True),
        Binding("ctrl+s", "sampler", "Sampler", tooltip="Temperature, top-p, max tokens, system prompt", priority=True),
        Binding("ctrl+l", "clear", "New", tooltip="Start a new conversation", priority=True),
        Binding("ctrl+g", "change_model", "Model", tooltip="Chat with another model", priority=True),
        Binding("ctrl+o", "conversations", "Chats", tooltip="Saved conversations", priority=True),
        Binding("ctrl+r", "regenerate", "Retry", tooltip="Regenerate the last answer", priority=True),
        Binding("ctrl+b", "edit_last", "Edit", tooltip="Edit your last message", priority=True),
        Binding("ctrl+t", "toggle_reasoning", "Reasoning", tooltip="Open or fold the reasoning", priority=True),
        Binding("ctrl+n", "next_effort", "Effort", tooltip="Next reasoning effort", priority=True),
    ]

    def __init__(self, info: Any, conversation_id: str | None = None, running: JobInfo | None = None) -> None:
        super().__init__()
        self.info = info
        # An answer the engine is writing already (started before an SSH drop), to follow from its start.
        self._running_answer = running
        self.effort: str | None = None
        self.ready: dict[str, Any] | None = None  # the engine's answer to loading the model
        self.conversation_id = conversation_id
        self.flushes = 0  # non-empty batches applied; tests check the UI kept up
        self._store: Any = None
        self._batch = StreamBatch()
        self._gen_message: ChatMessage | None = None
        self._pending_prompt: str | None = None
        self._editing: ChatMessage | None = None
        # This conversation's own sampler choices, saved with it (see SamplerModal).
        self.chat_settings: dict[str, Any] = {}
        # When the running generation was sent, until its first text or figures arrive.
        self._waiting_since: float | None = None
        # Clear while an answer streams, set once it has ended on screen: tests and benchmarks
        # await it instead of polling ``generating``, which would wake the UI thread for nothing.
        self.answer_ended = asyncio.Event()
        self.answer_ended.set()

    @classmethod
    def attached(cls, job: JobInfo) -> "ChatScreen":
        """The chat of an answer the engine is writing already (a chat job saving into a conversation)."""
        from optiq_tui.library.catalog import inspect_model

        return cls(inspect_model(job.args["model"]), job.args["conversation"], running=job)

    # ---- layout -------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Label(self._title_text(), id="chat-title")
        yield Transcript(id="transcript")
        yield Label("", id="notice")
        yield ProgressBar(id="load-progress", show_eta=False)
        yield StatsLine("", id="stats")
        with Horizontal(id="input-row"):
            yield Input(placeholder="Loading the model…", id="prompt", disabled=True)
            yield EffortSwitch(None, reason="loading", id="effort")
        yield Footer()

    def _title_text(self) -> str:
        return f"Chat · {self.info.name} · {self.info.quant}"

    @property
    def transcript(self) -> Transcript:
        return self.query_one("#transcript", Transcript)

    @property
    def stats_line(self) -> StatsLine:
        return self.query_one("#stats", StatsLine)

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def generating(self) -> bool:
        return self.job is not None and self.job.kind == "chat"

    @property
    def loading(self) -> bool:
        return self.job is not None and self.job.kind == "load"

    def on_mount(self) -> None:
        self.query_one("#notice").display = False
        self._flush_lock = asyncio.Lock()
        self._flush_timer: Timer | None = None
        self._pacer = FlushPacer()
        self._waiting_timer = self.set_interval(0.1, self._show_waiting, pause=True)
        if self._running_answer is not None:
            self.call_later(self._follow_answer, self._running_answer)
        else:
            self.load_model(self.info)

    async def _follow_answer(self, job: JobInfo) -> None:
        """Show the conversation and stream the running answer into it from its first token."""
        self._hide_load_bar()  # the engine holds the model already
        await self.open_conversation(job.args["conversation"])
        shown = self.transcript.messages
        if not shown or shown[-1].role != "user" or shown[-1].answer_text != job.args["text"]:
            # The engine saves the question once the model is loaded; this one may still be loading.
            await self.transcript.mount(ChatMessage("user", job.args["text"]))
        self.query_one("#prompt", Input).placeholder = "Answering (Esc stops it)…"
        message = ChatMessage("assistant", label=self.info.name, streaming=True)
        await self.transcript.mount(message)
        self.begin_stream(message)
        self.attach_job(job)

    # ---- loading ------------------------------------------------------

    def load_model(self, info: Any) -> None:
        """Have the engine load ``info`` (it drops the model it held first)."""
        self.info = info
        self.ready = None
        self.query_one("#chat-title", Label).update(self._title_text())
        prompt = self.query_one("#prompt", Input)
        prompt.disabled = True
        prompt.placeholder = f"Loading {info.name}…"
        bar = self.query_one("#load-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.query_one("#percentage").display = False  # "--%" until the load reports a total
        bar.display = True
        self._set_notice("")
        self.stats_line.show_text(f"loading {info.name}…")
        self.start_job("load", model=str(info.path), effort=self.settings.effort)

    async def _loaded(self, ready: dict[str, Any]) -> None:
        self.ready = ready
        self._hide_load_bar()
        effort = self.query_one("#effort", EffortSwitch)
        effort.set_options(ready["efforts"], ready["effort"], ready["effort_unavailable_reason"])
        self.effort = effort.value
        prompt = self.query_one("#prompt", Input)
        prompt.disabled = False
        prompt.placeholder = "Message (Enter to send)"
        prompt.focus()
        self.stats_line.show_text(f"ready · {self.info.name} · {self.sampler_text()}")
        if self._pending_prompt is not None:
            text, self._pending_prompt = self._pending_prompt, None
            await self.send(text)

    def _hide_load_bar(self) -> None:
        bar = self.query_one("#load-progress", ProgressBar)
        # An indeterminate bar animates at 15 frames/s even while hidden: that CPU would
        # come out of every token generated after it.
        bar.update(total=1, progress=1)
        bar.display = False

    def _load_failed(self, what: str) -> None:
        self._hide_load_bar()
        self.stats_line.show_text("no model loaded")
        self._set_notice(f"Could not load {self.info.name}: {what}  (Ctrl+G picks another model)", error=True)
        self.query_one("#prompt", Input).placeholder = "No model loaded: Ctrl+G picks one"

    def _set_notice(self, text: str, *, error: bool = False) -> None:
        notice = self.query_one("#notice", Label)
        notice.update(text)
        notice.set_class(error, "error")
        notice.display = bool(text)

    # ---- sending and streaming ---------------------------------------

    @on(Input.Submitted, "#prompt")
    async def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.generating:
            self.notify("Still answering: Esc stops it.", severity="warning")
            return
        event.input.value = ""
        await self._replace_edited()
        await self.send(text)

    async def send(self, text: str) -> None:
        """Show ``text`` as the user's message and stream the model's answer."""
        if self.ready is None:
            self._pending_prompt = text if self.loading else None
            if self._pending_prompt is None:
                self.notify("No model loaded.", severity="error")
            return
        await self.transcript.mount(ChatMessage("user", text))
        await self._start_generation(text)

    async def _start_generation(self, text: str, *, drop_oldest: bool = False) -> None:
        """Ask the engine for an answer to ``text``; it saves both into the conversation."""
        sampler, _source = self.current_sampler()
        message = ChatMessage("assistant", label=self.info.name, streaming=True)
        await self.transcript.mount(message)
        self.begin_stream(message)
        self.start_job("chat", model=str(self.info.path), text=text, conversation=self.conversation_id,
                       system=self.system_prompt or "", sampler=asdict(sampler), effort=self.effort,
                       drop_oldest=drop_oldest)

    async def _apply(self, batch: Batch) -> None:
        message = self._gen_message
        assert message is not None
        if batch.segments or batch.stats is not None:
            self._stop_waiting()
        if batch.segments:
            await message.apply(batch.segments)
        for event in batch.other:
            if isinstance(event, Log):  # the engine dropped old turns to make room
                self.notify(event.message)
        if batch.stats is not None:
            self.stats_line.show_stats(batch.stats, live=batch.finished is None)
        if batch.finished is not None:
            fin = batch.finished
            await self._end_generation(fin.reason, fin.error, fin.stats.reasoning_tokens)

    async def _end_generation(self, reason: str, error: str | None = None, reasoning_tokens: int = 0) -> None:
        message = self._gen_message
        if message is None:
            return
        self._stop_flushing()
        self._stop_waiting()
        engine_priority(False)
        self.query_one("#prompt", Input).cursor_blink = True
        self._gen_message = None
        await message.finish(reason, error, reasoning_tokens)

    async def _job_ended(self, reason: str, error: str | None = None) -> None:
        """The generation job returned or failed: apply what is left, then end it if no Finished came."""
        await self._flush()
        if self._gen_message is not None:
            await self._end_generation(reason, error)
        self.answer_ended.set()
        if self._running_answer is not None:
            # The followed answer is done: now the model's options and the prompt (loaded already, quick).
            self._running_answer = None
            self.load_model(self.info)

    # ---- the engine's jobs (JobScreen hooks) ------------------------

    def job_sink(self, job: JobInfo) -> Callable[[Any], None] | None:
        # An answer's tokens go to the batch from the reader thread; loading progress comes here.
        return self._batch.push if job.kind == "chat" else None

    async def job_started(self, job: JobInfo) -> None:
        if job.kind == "chat" and self.conversation_id is None:
            # The engine made the conversation; this conversation's sampler choices go with it.
            self.conversation_id = job.args.get("conversation")
            if self.chat_settings and self.conversation_id:
                self._save_settings()

    async def job_event(self, job: JobInfo, event: Any) -> None:
        if isinstance(event, Progress):
            bar = self.query_one("#load-progress", ProgressBar)
            bar.update(total=event.total, progress=event.done)
            bar.query_one("#percentage").display = bool(event.total)
            self.stats_line.show_text(f"loading {self.info.name}: {event.message or event.stage}")

    async def job_done(self, job: JobInfo) -> None:
        if job.kind == "load":
            await self._loaded(job.result)
        else:
            await self._job_ended("stop")

    async def job_failed(self, job: JobInfo) -> None:
        if job.kind == "load":
            self._load_failed(job.error or "failed")
        elif job.error_type == "ContextOverflow":
            await self._context_overflow(job.error or "")
        else:
            await self._job_ended("error", job.error)

    async def job_cancelled(self, job: JobInfo) -> None:
        if job.kind == "chat":
            await self._job_ended("cancelled")
        else:
            self._hide_load_bar()
            self.stats_line.show_text("loading cancelled")

    def job_lost(self) -> None:
        self.call_later(self._job_ended, "error", "lost the engine")

    async def _context_overflow(self, error: str) -> None:
        """The prompt no longer fits: drop the empty answer and offer to drop old turns."""
        from optiq_tui.ui.screens.modals import ConfirmModal

        message = self._gen_message
        self._gen_message = None
        self._stop_flushing()
        self._stop_waiting()
        engine_priority(False)
        self.query_one("#prompt", Input).cursor_blink = True
        last_user = self.transcript.last("user")
        text = last_user.answer_text if last_user is not None else ""
        if message is not None:
            await message.remove()
        self.answer_ended.set()

        def answered(drop: bool | None) -> None:
            if drop and self.ready is not None:
                self.call_later(partial(self._start_generation, text, drop_oldest=True))

        self.app.push_screen(
            ConfirmModal("Conversation too long", f"{error}\n\nDrop the oldest turns and try again?", yes="Drop"),
            answered,
        )

    # ---- actions ------------------------------------------------------

    def action_stop_or_back(self) -> None:
        if self.generating:
            self.run_worker(self.cancel_job(), group="cancel")
        elif self.cancel_edit():
            return
        elif self.loading:
            self.run_worker(self.cancel_job(), group="cancel")
            self.app.pop_screen()
        else:
            self.app.pop_screen()

    def action_toggle_reasoning(self) -> None:
        """Collapse every reasoning panel when any is open, else open them all."""
        panels = list(self.query(ReasoningPanel))
        if not panels:
            self.notify("No reasoning to show.")
            return
        collapse = any(not p.collapsed for p in panels)
        for panel in panels:
            panel.collapsed = collapse

    def action_next_effort(self) -> None:
        self.query_one("#effort", EffortSwitch).action_next()

    @on(EffortSwitch.Changed)
    def _effort_changed(self, event: EffortSwitch.Changed) -> None:
        self.effort = event.value
        self.settings.effort = event.value
        self.settings.save()

