"""Side-by-side chat of two models, with agreement figures and a blind mode.

The engine runs the pair (a "compare" job with ``keep``: its CompareSession
stays loaded with both conversations between turns): one prompt to both models
(same system prompt, sampler, seed); both stay loaded and stream together when
they fit, else they take turns and the screen says so. Each side's events come
back wrapped in ``SideEvent`` and go, from the job's reader thread, into that
column's :class:`StreamBatch`, drained on a timer like the chat screen.

Blind, nothing before the vote tells the sides apart: no names, speeds or
load order, the findings name Left first, and when the models take turns
both answers show only once both are done.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Footer, Input, Label

from optiq_tui.engine.jobs import JobInfo
from optiq_tui.progress import Log, OptiqError, Progress
from optiq_tui.ui.screens.base import JobScreen
from optiq_tui.ui.screens.compare.blind import BlindMode
from optiq_tui.ui.screens.compare.findings import describe_turn, swap_sides
from optiq_tui.ui.widgets.compare_column import CompareColumn
from optiq_tui.ui.widgets.reasoning_panel import ReasoningPanel
from optiq_tui.ui.widgets.stream_batch import FLUSH_INTERVAL_S, StreamBatch, engine_priority
from optiq_tui.ui.widgets.vote_bar import VOTES, VoteBar

SIDE_KEYS = ("a", "b")


@dataclass
class Side:
    """One model of the pair and what the UI keeps of it."""

    info: Any
    batch: StreamBatch = field(default_factory=StreamBatch)


class CompareScreen(BlindMode, JobScreen):
    """Two columns, one prompt; Ctrl+B starts a blind round."""

    CSS_PATH = "compare.tcss"
    BUSY_TEXT = "Still answering: Esc stops it."

    BINDINGS = [
        Binding("escape", "stop_or_back", "Stop/Back"),
        Binding("ctrl+t", "toggle_reasoning", "Reasoning", priority=True),
        Binding("ctrl+b", "toggle_blind", "Blind", priority=True),
        Binding("ctrl+l", "clear", "Clear", priority=True),
        Binding("ctrl+g", "pick_models", "Models", priority=True),
    ]

    def __init__(self, a: Any | None, b: Any | None, *, blind: bool = False, seed: int | None = None) -> None:
        super().__init__()
        self.sides: list[Side | None] = [Side(a) if a else None, Side(b) if b else None]
        self.blind = blind
        self.order = [0, 1]  # order[k]: which side (A=0, B=1) shows in column k (left=0)
        self.voted: str | None = None
        self.tally: Any = None
        self.flushes = 0
        self.plan: dict[str, Any] | None = None  # the engine's memory plan for the pair
        self.ready = False  # the pair is loaded in the engine
        self.result: dict[str, Any] | None = None  # the last turn (a compare job's result)
        self._rng = random.Random(seed)
        self._turn = False  # a turn is running
        self._pending: str | None = None

    # ---- layout -------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Label("Compare", id="cmp-title")
        yield Label("", id="cmp-mode")
        with Horizontal(id="columns"):
            yield CompareColumn("Left", id="col-left")
            yield CompareColumn("Right", id="col-right")
        yield Label("", id="agreement")
        yield VoteBar(id="vote")
        yield Label("", id="tally")
        yield Input(placeholder="One prompt for both models (Enter)", id="cmp-prompt")
        yield Footer()

    @property
    def columns(self) -> list[CompareColumn]:
        return [self.query_one("#col-left", CompareColumn), self.query_one("#col-right", CompareColumn)]

    def column_of(self, side: int) -> CompareColumn:
        return self.columns[self.order.index(side)]

    @property
    def running(self) -> bool:
        return self._turn

    def on_mount(self) -> None:
        self.query_one("#vote").display = False
        self.query_one("#tally").display = False
        self._flush_lock = asyncio.Lock()
        self._timer = self.set_interval(FLUSH_INTERVAL_S, self._flush, pause=True)
        if self.blind:
            self._shuffle()
        if None in self.sides:
            self.action_pick_models()
        else:
            self._prepare()

    # ---- models -------------------------------------------------------

    def action_pick_models(self) -> None:
        """Pick model A, then model B, with the library picker."""
        from optiq_tui.ui.screens.model_picker import ModelPickerModal

        if self.running:
            self.notify("Still answering: Esc stops it first.", severity="warning")
            return

        def picked_b(info: Any) -> None:
            if info is not None:
                self.sides[1] = Side(info)
            if None not in self.sides:
                self.call_later(self._restart)

        def picked_a(info: Any) -> None:
            if info is not None:
                self.sides[0] = Side(info)
            a = self.sides[0].info if self.sides[0] else None
            self.app.push_screen(ModelPickerModal("Model B", exclude=a), picked_b)

        self.app.push_screen(ModelPickerModal("Model A"), picked_a)

    def _pair(self) -> dict[str, Any]:
        a, b = (s.info for s in self.sides)  # type: ignore[union-attr]
        return {"model_a": str(a.path), "model_b": str(b.path), "system": self.app.settings.system_prompt,
                "keep": True}

    def _prepare(self, *, new: bool = False) -> None:
        """Have the engine decide whether both fit, and load what stays loaded."""
        a, b = (s.info for s in self.sides)  # type: ignore[union-attr]
        self._show_titles()
        self.query_one("#cmp-mode", Label).update(f"checking memory for {a.name} and {b.name}…")
        self.ready = False
        self.start_job("compare", **self._pair(), prepare=True, new=new)

    async def _prepared(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.ready = True
        mode = self.query_one("#cmp-mode", Label)
        mode.update(plan["plan"])
        mode.set_class(not plan["both_loaded"], "sequential")
        self.query_one("#cmp-prompt", Input).focus()
        for column in self.columns:
            column.stats.show_text("ready")
        if self._pending is not None:
            text, self._pending = self._pending, None
            await self.send(text)

    async def job_event(self, job: JobInfo, event: Any) -> None:
        """Loading progress while preparing: shown in the column of the side that loads."""
        if isinstance(event, Log):
            self.query_one("#cmp-mode", Label).update(event.message)
            return
        side = getattr(event, "side", None)
        if side in SIDE_KEYS:
            self._show_side_progress(SIDE_KEYS.index(side), event.event)

    def _show_side_progress(self, side: int, event: Any) -> None:
        column = self.column_of(side)
        if self.masked:
            # Which column loads first (and its log's model name) would name the side.
            self.query_one("#cmp-mode", Label).update("loading the models…")
            return
        if isinstance(event, Progress):
            pct = f" {event.fraction:.0%}" if event.fraction is not None else ""
            column.stats.show_text(f"loading{pct}")
        elif isinstance(event, Log):
            column.stats.show_text(event.message)

    # ---- blind mode ---------------------------------------------------

    @on(VoteBar.Voted)
    def _voted(self, event: VoteBar.Voted) -> None:
        """Record the vote for this pair, reveal the names and show the pair's tally."""
        from optiq_tui.eval.votes import record_vote

        if not self.blind or self.voted is not None:
            return
        left, right = (self.sides[self.order[k]].info for k in (0, 1))  # type: ignore[union-attr]
        self.voted = event.vote
        prompt = self.result["prompt"] if self.result is not None else None
        self.tally = record_vote(left, right, event.vote, prompt)
        self.query_one("#vote").display = False
        for column in self.columns:
            column.reveal()
        self._show_titles()
        self._show_result()
        tally = self.query_one("#tally", Label)
        tally.update(f"You voted: {VOTES[event.vote]}.  Tally for this pair: {self.tally.describe()}")
        tally.display = True
        self.query_one("#cmp-prompt", Input).focus()

    # ---- sending ------------------------------------------------------

    @on(Input.Submitted, "#cmp-prompt")
    async def _submitted(self, event: Input.Submitted) -> None:
        text = event.value.strip()
        if not text:
            return
        if self.running:
            self.notify("Still answering: Esc stops it.", severity="warning")
            return
        event.input.value = ""
        if not self.ready:
            self.notify("The models are loading: your prompt is sent when they are ready.")
        await self.send(text)

    async def send(self, text: str) -> None:
        """Send ``text`` to both models; the columns stream as each answers."""
        if not self.ready:
            self._pending = text
            return
        if self.blind and self.voted is not None:
            # A new prompt after a reveal starts the next blind round.
            self.voted = None
            self._shuffle()
            self._show_titles()
        self.query_one("#tally").display = False
        self.query_one("#agreement", Label).update("")
        from optiq_tui.engine.sampling import resolve_sampler

        s = self.app.settings
        effort = s.effort
        # Both sides share one sampler: A's recommendation (usually quants of one base).
        sampler, _source = resolve_sampler(
            self.sides[0].info.path, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=s.seed
        )
        for side in self.sides:
            side.batch = StreamBatch()  # type: ignore[union-attr]
        await self._start_columns(text)
        self._turn = True
        self.start_job("compare", **self._pair(), prompt=text, sampler=asdict(sampler), effort=effort)
        engine_priority(True)
        self._timer.resume()

    def job_sink(self, job: JobInfo) -> Callable[[Any], None] | None:
        if job.args.get("prepare"):
            return None  # loading progress: a few events, shown as they come
        batches = [side.batch for side in self.sides]  # type: ignore[union-attr]

        def route(event: Any) -> None:
            # On the job's reader thread: only the thread-safe batches are touched.
            side = getattr(event, "side", None)
            if side in SIDE_KEYS:
                batches[SIDE_KEYS.index(side)].push(event.event)

        return route

    async def _start_columns(self, text: str) -> None:
        for k, column in enumerate(self.columns):
            await column.add_user(text)
            side = self.order[k]
            label = ("Left" if k == 0 else "Right") if self.blind else self.sides[side].info.name  # type: ignore[union-attr]
            await column.start_answer(label)
            column.masked = self.masked
            if self.holding:
                column.stats.show_text("answering… both answers show when both are done")
            elif self.plan is not None and not self.plan["both_loaded"] and side == 1:
                column.stats.show_text("waiting for the other model…")
            else:
                column.stats.show_text("answering…")

    async def _flush(self) -> None:
        # The timer and the turn-ended handler both flush; one at a time keeps the order.
        async with self._flush_lock:
            if self.holding and self.running:
                return
            for i, side in enumerate(self.sides):
                batch = side.batch.drain()  # type: ignore[union-attr]
                if batch.empty:
                    continue
                self.flushes += 1
                for event in batch.other:
                    self._show_side_progress(i, event)
                await self.column_of(i).apply(batch)

    async def _turn_ended(self, result: dict[str, Any] | None, reason: str | None = None) -> None:
        self._turn = False
        await self._flush()
        self._timer.pause()
        engine_priority(False)
        for column in self.columns:
            if column.current is not None and column.current.streaming:
                await column.current.finish(reason or "stop")
        if result is not None:
            self.result = result
            self._show_result()
        if self.blind and self.voted is None and reason is None:
            vote = self.query_one("#vote", VoteBar)
            vote.display = True
            vote.focus()

    def _show_result(self) -> None:
        if self.result is None:
            return
        if self.masked:
            # Before the vote, name the sides by place only, Left first whichever side it is.
            result = self.result if self.order == [0, 1] else swap_sides(self.result)
            text = describe_turn(result, ("Left", "Right"))
        else:
            # The names are in the column titles; A and B keep the findings short at 80 columns.
            text = describe_turn(self.result, ("A", "B"))
        self.query_one("#agreement", Label).update(text)

    # ---- the engine's jobs (JobScreen hooks) ----------------------------

    async def job_done(self, job: JobInfo) -> None:
        if job.args.get("prepare"):
            await self._prepared(job.result)
        else:
            await self._turn_ended(job.result)

    async def job_failed(self, job: JobInfo) -> None:
        error = OptiqError(job.error or "failed")
        if job.args.get("prepare"):
            self.query_one("#cmp-mode", Label).update(f"[b]Cannot compare:[/b] {job.error}")
            self.app.show_error("Cannot compare these models", error, "")
        else:
            await self._turn_ended(None, "error")
            self.app.show_error("Compare failed", error, "")

    async def job_cancelled(self, job: JobInfo) -> None:
        if not job.args.get("prepare"):
            await self._turn_ended(None, "cancelled")

    def job_lost(self) -> None:
        if self._turn:
            self.call_later(self._turn_ended, None, "error")

    # ---- actions ------------------------------------------------------

    def action_stop_or_back(self) -> None:
        if self.running:
            self.run_worker(self.cancel_job(), group="cancel")
            return
        # Leaving: stop a preparation, and free both models' memory in the engine.
        self.app.run_worker(self._leave(self.job if self.job is not None and self.job.id else None),
                            group="compare-release")
        self.app.pop_screen()

    async def _leave(self, preparing: JobInfo | None) -> None:
        engine = await self.app.client()
        if preparing is not None:
            await engine.cancel(preparing.id)
        await engine.submit("release")

    def action_toggle_reasoning(self) -> None:
        panels = list(self.query(ReasoningPanel))
        collapse = any(not p.collapsed for p in panels)
        for panel in panels:
            panel.collapsed = collapse

    async def action_clear(self) -> None:
        """Forget both conversations: a fresh CompareSession, whose histories start empty."""
        if self.running:
            self.notify("Still answering: Esc stops it first.", severity="warning")
            return
        await self._reset_view()
        if None not in self.sides:
            self._prepare(new=True)

    async def _reset_view(self) -> None:
        for column in self.columns:
            await column.clear()
        self.voted = None
        self.result = None
        self.query_one("#agreement", Label).update("")
        self.query_one("#tally").display = False
        self.query_one("#vote").display = False

    async def _restart(self) -> None:
        """New models were picked: clear the columns and prepare the new pair."""
        await self._reset_view()
        self._prepare()
