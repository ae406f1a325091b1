"""The quantize form's "fit in" rows: memory, context and KV bits in, the engine's plan out.

The plan counts the model's own caches, which takes MLX (quant/plan.py), so it
is an engine job; this widget only parses the two fields (with the planner's
own parsers) and shows what the engine answered.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Grid
from textual.message import Message
from textual.widgets import Input, Label, Select, Static

from optiq_tui.library.model_files import KV_BITS
from optiq_tui.progress import OptiqError
from optiq_tui.ui.format import human_bytes

# Typing "16GB" changes the field four times: ask the engine once the keys stop.
SETTLE_S = 0.3
UNQUANTIZED_KV = 0  # the KV select's value for "no KV quantization" (a Select needs a value)


@dataclass(frozen=True)
class PlanAsk:
    """What the engine is asked to plan (and what its answer belongs to)."""

    memory: str
    context: int
    kv_bits: int | None
    group_size: int


def plan_text(ask: PlanAsk, plan: dict[str, Any]) -> Text:
    """A plan (quant/plan.py Plan.to_dict()) in two lines."""
    peak = plan["peak"]
    kv = f"KV {ask.kv_bits}-bit" if ask.kv_bits else "KV"
    what = "fits unquantized" if plan["unquantized_fits"] else f"{plan['target_bpw']:.2f} bpw fits"
    return Text.assemble(
        ("→ ", "bold"), (what, "bold"), f": peak {human_bytes(peak['total'])} of {human_bytes(plan['memory'])}\n",
        f"weights {human_bytes(peak['weights'])} · {kv} {human_bytes(peak['kv_cache'])}"
        f" · working {human_bytes(peak['working'])}",
    )


class FitIn(Grid):
    """Memory/context/KV rows; posts :class:`FitIn.Planned` when the engine answers."""

    class Planned(Message):
        """A new plan for the current fields (``plan`` None: ``error`` says why there is none)."""

        def __init__(self, plan: dict[str, Any] | None, error: str | None) -> None:
            super().__init__()
            self.plan = plan
            self.error = error

    def __init__(self, model: str, group_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model  # the source's folder path, as the engine resolves it
        self.group_size = group_size
        self.ask: PlanAsk | None = None  # the fields as last read, when complete and readable
        # The engine's answer for ``ask``: every change of the fields clears it first.
        self.plan: dict[str, Any] | None = None
        self.error: str | None = None  # why there is no plan (unreadable field, does not fit)
        self.bad_fields: set[str] = set()

    def compose(self) -> ComposeResult:
        kv_choices = [("unquantized", UNQUANTIZED_KV)] + [(f"{b}-bit", b) for b in sorted(KV_BITS, reverse=True)]
        yield Label("Fit in memory")
        yield Input(placeholder="optional, e.g. 16GB: sets the target", id="memory", compact=True)
        yield Label("with context")
        yield Input(placeholder="tokens, e.g. 32768", id="context", compact=True)
        yield Label("KV cache")
        yield Select(kv_choices, value=UNQUANTIZED_KV, allow_blank=False, id="kv-bits", compact=True)
        yield Label("")
        yield Static("", id="plan-result", classes="form-hint")

    @property
    def kv_bits(self) -> int | None:
        value = self.query_one("#kv-bits", Select).value
        return None if value in (UNQUANTIZED_KV, Select.BLANK) else int(value)  # type: ignore[arg-type]

    def set_group_size(self, group_size: int) -> None:
        if group_size != self.group_size:
            self.group_size = group_size
            self._replan()

    @on(Input.Changed, "#memory, #context")
    @on(Select.Changed, "#kv-bits")
    def _fields_changed(self, event: Message) -> None:
        event.stop()  # the form listens for its own fields only
        self._replan()

    def _replan(self) -> None:
        from optiq_tui.quant.plan import parse_context, parse_memory

        memory_text = self.query_one("#memory", Input).value.strip()
        context_text = self.query_one("#context", Input).value.strip()
        self.plan, self.error, self.ask, self.bad_fields = None, None, None, set()
        problems = []
        for field, text, parse in (("memory", memory_text, parse_memory), ("context", context_text, parse_context)):
            if text:
                try:
                    parse(text)
                except OptiqError as exc:
                    problems.append(str(exc))
                    self.bad_fields.add(field)
        for field in ("memory", "context"):
            self.query_one(f"#{field}", Input).set_class(field in self.bad_fields, "-invalid")
        result = self.query_one("#plan-result", Static)
        result.set_class(bool(problems), "-error")
        if problems:
            self.error = "; ".join(problems)
            result.update(Text(self.error))  # as typed: no markup
        elif not memory_text:
            result.update("")
        elif not context_text:
            result.update(Text("give a context in tokens too", style="italic"))
        else:
            self.ask = PlanAsk(memory_text, parse_context(context_text), self.kv_bits, self.group_size)
            result.update(Text("planning…", style="italic"))
            self._ask_engine(self.ask)
            return
        self.workers.cancel_group(self, "plan")
        self.post_message(self.Planned(None, self.error))

    @work(exclusive=True, group="plan", exit_on_error=False)
    async def _ask_engine(self, ask: PlanAsk) -> None:
        await asyncio.sleep(SETTLE_S)  # a newer key press cancels this worker before it asks
        try:
            engine = await self.app.client()
            job = await engine.submit("plan", model=self.model, memory=ask.memory, context=ask.context,
                                      kv_bits=ask.kv_bits, group_size=ask.group_size)
            async for _event in engine.events(job.id):
                pass
            final = await engine.job(job.id)
        except Exception as exc:  # noqa: BLE001 - an engine that went away: a line, not a crash
            final, error = None, f"the engine could not plan: {exc}"
        else:
            error = None if final.state == "done" else (final.error or final.state)
        if ask != self.ask:
            return  # the fields changed while the engine planned
        self.plan = final.result if final is not None and error is None else None
        self.error = error
        result = self.query_one("#plan-result", Static)
        result.set_class(self.plan is None, "-error")
        result.update(plan_text(ask, self.plan) if self.plan else Text(error or "?"))
        self.post_message(self.Planned(self.plan, self.error))

    def review_line(self) -> str | None:
        """The plan in one line for the review before start, or None without a current one."""
        if self.ask is None or self.plan is None:
            return None
        peak, kv = self.plan["peak"], f", KV {self.ask.kv_bits}-bit" if self.ask.kv_bits else ""
        what = "fits unquantized" if self.plan["unquantized_fits"] else f"planned {self.plan['target_bpw']:.2f} bpw"
        return (f"fit in {human_bytes(self.plan['memory'])} at {self.ask.context} tokens{kv}: "
                f"{what}, peak {human_bytes(peak['total'])}")
