"""The engine side of A/B: two models answer the same prompts, and blind votes.

:class:`CompareSession` keeps one conversation per side and answers each
prompt with both models, same system prompt, sampler and seed. When both
models fit in memory they stay loaded; otherwise they take turns (A, then B),
and each turn reloads what it needs. Every event of a side is sent wrapped in
:class:`SideEvent` ("a" or "b"); the turn ends with a :class:`TurnResult`
holding both answers, where they first differ, and (when the models are
related) the cross-KL of each answer under the other model.

When both are loaded, the two generations advance token by token on the one
engine thread (MLX work belongs to one thread), each round in a random order,
so neither side streams or finishes first because of its place: a blind vote
must not be decided by who answered first. Each side's measured speed then
includes the other's steps; the figures compare, they are not a benchmark.
"""

from __future__ import annotations

import gc
import random
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from optiq_tui.eval.agreement import Agreement, CrossKL, answer_logprobs, compare_tokens, kl_between
from optiq_tui.progress import Log, ProgressFn, check_cancel, no_progress
from optiq_tui.sizes import human_bytes

SIDES = ("a", "b")


@dataclass(frozen=True)
class SideEvent:
    """An event of one side: loading progress, a text delta, stats, or Finished."""

    side: str  # "a" | "b"
    event: Any


@dataclass(frozen=True)
class MemoryPlan:
    """Whether both models can stay loaded at once, with the figures behind it."""

    both_loaded: bool
    need_a: int
    need_b: int
    available: int
    source: str  # where ``available`` comes from

    def describe(self) -> str:
        if self.need_b == 0:
            return f"one model on both sides, loaded once · it needs {human_bytes(self.need_a)}"
        figures = (
            f"A needs {human_bytes(self.need_a)}, B {human_bytes(self.need_b)}, "
            f"{human_bytes(self.available)} free ({self.source})"
        )
        if self.both_loaded:
            return f"both models stay loaded · {figures}"
        return f"not enough memory for both: they answer one after the other · {figures}"


@dataclass(frozen=True)
class TurnResult:
    """Both answers to one prompt and how they compare.

    ``kl_a_under_b`` is KL(A || B) along A's answer (how far B's predictions
    are from A's where A wrote); None when the models are not related (one the
    other's source, or both from one source) or a side did not answer.
    """

    prompt: str
    answer_a: str
    answer_b: str
    finished_a: Any
    finished_b: Any
    agreement: Agreement | None
    kl_a_under_b: CrossKL | None
    kl_b_under_a: CrossKL | None
    related: bool


def plan_memory(info_a: Any, info_b: Any) -> MemoryPlan:
    """Decide from the loader's estimates and free memory whether both fit together."""
    from optiq_tui.engine.loader import available_memory, estimate_memory

    need_a = estimate_memory(info_a)
    need_b = 0 if _same_model(info_a, info_b) else estimate_memory(info_b)
    have, source = available_memory()
    return MemoryPlan(need_a + need_b <= have, need_a, need_b, have, source)


def related(info_a: Any, info_b: Any) -> bool:
    """One model is the other's source, or both were made from the same source."""
    from optiq_tui.library.provenance import source_path

    pa, pb = Path(info_a.path).resolve(), Path(info_b.path).resolve()
    sa, sb = source_path(info_a), source_path(info_b)
    return pa == pb or sa == pb or sb == pa or (sa is not None and sa == sb)


class CompareSession:
    """Two conversations answering the same prompts; use from the engine thread."""

    def __init__(
        self,
        info_a: Any,
        info_b: Any,
        system_prompt: str | None = None,
        *,
        plan: MemoryPlan | None = None,
        measure_kl: bool | None = None,
    ) -> None:
        self.infos = {"a": info_a, "b": info_b}
        self.system_prompt = system_prompt
        self.plan = plan if plan is not None else plan_memory(info_a, info_b)
        self.related = related(info_a, info_b)
        self.measure_kl = self.related if measure_kl is None else measure_kl
        # Past (user, answer) pairs per side, replayed when a side is reloaded.
        self.history: dict[str, list[tuple[str, str]]] = {"a": [], "b": []}
        self._loaded: dict[str, Any] = {}
        self._sessions: dict[str, Any] = {}

    # ---- loading --------------------------------------------------------

    def prepare(self, *, progress: ProgressFn = no_progress, cancel: threading.Event | None = None) -> None:
        """Load A (and B when both fit) ahead of the first prompt."""
        self._ensure("a", progress, cancel)
        if self.plan.both_loaded:
            self._ensure("b", progress, cancel)

    def _ensure(self, side: str, progress: ProgressFn, cancel: threading.Event | None) -> Any:
        if side in self._loaded:
            return self._loaded[side]
        other = "b" if side == "a" else "a"
        if _same_model(self.infos["a"], self.infos["b"]) and other in self._loaded:
            self._loaded[side] = self._loaded[other]  # one model answering twice: load it once
        else:
            if not self.plan.both_loaded:
                self._unload(other)
            from optiq_tui.engine.loader import load

            progress(SideEvent(side, Log(f"loading {self.infos[side].name}")))
            self._loaded[side] = load(
                self.infos[side], progress=lambda ev: progress(SideEvent(side, ev)), cancel=cancel
            )
        return self._loaded[side]

    def _unload(self, side: str) -> None:
        if self._loaded.pop(side, None) is not None:
            self._sessions.pop(side, None)
            gc.collect()
            import mlx.core as mx

            mx.clear_cache()

    def _session(self, side: str, progress: ProgressFn, cancel: threading.Event | None) -> Any:
        loaded = self._ensure(side, progress, cancel)
        if side not in self._sessions:
            from optiq_tui.engine.session import ChatSession

            session = ChatSession(loaded, self.system_prompt)
            for user, answer in self.history[side]:
                session.add_message("user", user)
                session.add_message("assistant", answer)
            self._sessions[side] = session
        return self._sessions[side]

    def close(self) -> None:
        for side in SIDES:
            self._unload(side)

    # ---- one prompt ---------------------------------------------------------

    def ask(
        self,
        user_text: str,
        sampler: Any = None,
        effort: str | None = None,
        *,
        progress: ProgressFn = no_progress,
        cancel: threading.Event | None = None,
        interleave: bool = True,
    ) -> TurnResult:
        """Answer ``user_text`` with both sides; events go to ``progress`` as SideEvents.

        Both loaded (and ``interleave``): the sides advance token by token
        together. Otherwise A answers, then B. A cancel stops both.
        """
        from optiq_tui.engine.session import SamplerSettings

        sampler = sampler if sampler is not None else SamplerSettings()
        together = interleave and self.plan.both_loaded
        finished: dict[str, Any] = {}
        prompts: dict[str, list[int]] = {}
        streams: dict[str, Iterator[Any]] = {}
        sessions: dict[str, Any] = {}  # kept here: taking turns unloads A's before B answers
        for side in SIDES:
            if cancel is not None and cancel.is_set():
                break
            session = sessions[side] = self._session(side, progress, cancel)
            # The prompt as the model saw it, for cross-KL along the answer afterwards.
            prompts[side] = session.loaded.format.render(session.messages(user_text), effort)
            streams[side] = session.generate(user_text, sampler, effort, cancel)
            if not together:
                _run_streams({side: streams[side]}, progress, finished)
        if together:
            _run_streams(streams, progress, finished)
        answers: dict[str, str] = {}
        for side in streams:
            turns = sessions[side].turns
            answers[side] = turns[-1].answer if turns else ""
            self.history[side].append((user_text, answers[side]))

        agreement = kl_ab = kl_ba = None
        stopped = cancel is not None and cancel.is_set()
        # Answers cut short by a stop would compare their lengths, not the models.
        if len(answers) == 2 and not stopped:
            tokenizer = self._sessions["b"].loaded.tokenizer
            ids = {s: _encode(tokenizer, answers[s]) for s in SIDES}
            agreement = compare_tokens(ids["a"], ids["b"])
            if self.measure_kl:
                kl_ab, kl_ba = self._cross_kl(prompts, ids, progress, cancel)
        return TurnResult(
            prompt=user_text,
            answer_a=answers.get("a", ""),
            answer_b=answers.get("b", ""),
            finished_a=finished.get("a"),
            finished_b=finished.get("b"),
            agreement=agreement,
            kl_a_under_b=kl_ab,
            kl_b_under_a=kl_ba,
            related=self.related,
        )

    def _cross_kl(
        self,
        prompts: dict[str, list[int]],
        ids: dict[str, list[int]],
        progress: ProgressFn,
        cancel: threading.Event | None,
    ) -> tuple[CrossKL | None, CrossKL | None]:
        """KL(A||B) on A's answer and KL(B||A) on B's, B's log-probs first (B is loaded
        now); in turn-taking mode A is then reloaded, which the next prompt needs anyway."""
        wanted = [s for s in SIDES if ids[s] and prompts[s]]
        if not wanted:
            return None, None
        model_b = self._ensure("b", progress, cancel).model
        under_b = {s: answer_logprobs(model_b, prompts[s], ids[s]) for s in wanted}
        check_cancel(cancel)
        model_a = self._ensure("a", progress, cancel).model
        under_a = {s: answer_logprobs(model_a, prompts[s], ids[s]) for s in wanted}
        kl_ab = kl_between(under_a["a"], under_b["a"]) if "a" in wanted else None
        kl_ba = kl_between(under_b["b"], under_a["b"]) if "b" in wanted else None
        return kl_ab, kl_ba


def _run_streams(
    streams: dict[str, Iterator[Any]], progress: ProgressFn, finished: dict[str, Any]
) -> None:
    """Step the sides' generations one event at a time, each round in a random order, to the end.

    A seeded side draws each token from a key of (seed, token index) (see
    session.seeded), so its answer does not depend on how the two interleave.
    """
    from optiq_tui.engine.events import Finished

    shuffle = random.Random().shuffle
    live = list(streams)
    try:
        while live:
            shuffle(live)
            for side in list(live):
                event = next(streams[side], None)
                if event is None:
                    live.remove(side)
                    continue
                progress(SideEvent(side, event))
                if isinstance(event, Finished):
                    finished[side] = event
    finally:
        for stream in streams.values():
            close = getattr(stream, "close", None)
            if close is not None:
                close()


def _same_model(info_a: Any, info_b: Any) -> bool:
    return Path(info_a.path).resolve() == Path(info_b.path).resolve()


def _encode(tokenizer: Any, text: str) -> list[int]:
    # The answer text re-encoded: ChatSession streams text, and for template
    # models re-encoding gives back the generated tokens.
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


def run_compare(
    info_a: Any,
    info_b: Any,
    prompt: str,
    *,
    system_prompt: str | None = None,
    sampler: Any = None,
    effort: str | None = None,
    progress: ProgressFn = no_progress,
    cancel: threading.Event | None = None,
) -> tuple[MemoryPlan, TurnResult]:
    """One prompt, both models, then unload: what ``optiq-chat compare`` runs.

    The sides answer one after the other, so a terminal prints each answer whole.
    """
    session = CompareSession(info_a, info_b, system_prompt)
    try:
        progress(Log(session.plan.describe()))
        turn = session.ask(prompt, sampler, effort, progress=progress, cancel=cancel, interleave=False)
        return session.plan, turn
    finally:
        session.close()

