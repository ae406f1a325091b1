"""A chat with a loaded model: history, prompt cache, streamed generation with stats.

Generation is mlx-lm's ``stream_generate``; this module adds the chat format
(prompt rendering and splitting reasoning from the answer), live figures,
cancellation between tokens, and one KV cache kept across turns so a follow-up
question only processes the new tokens.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from optiq_tui.engine.events import (
    AnswerDelta,
    Finished,
    GenStats,
    ReasoningDelta,
    StatsUpdate,
)
from optiq_tui.engine.sampling import SamplerSettings
from optiq_tui.progress import Cancelled, OptiqError

if TYPE_CHECKING:
    from optiq_tui.engine.loader import LoadedModel

__all__ = [
    "AnswerDelta",
    "ChatSession",
    "ContextOverflow",
    "Finished",
    "GenStats",
    "ReasoningDelta",
    "SamplerSettings",
    "StatsUpdate",
    "Turn",
]

# Live stats at most this often, so the token loop stays as fast as raw mlx-lm.
STATS_INTERVAL_S = 0.1
# A prompt must leave room for at least this many new tokens (or max_tokens, if fewer).
MIN_ANSWER_ROOM = 256
# Smaller than mlx-lm's 2048 so a cancel during a long prompt is seen sooner.
PREFILL_STEP = 512


@dataclass
class Turn:
    """One exchange; ``reasoning`` is kept for display but never replayed to the model."""

    user: str
    answer: str = ""
    reasoning: str = ""


class ContextOverflow(OptiqError):
    """The conversation no longer fits the model's context; nothing was generated."""

    def __init__(self, prompt_tokens: int, context_length: int, droppable_turns: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        self.droppable_turns = droppable_turns
        if droppable_turns:
            advice = f"Drop the oldest turns ({droppable_turns} can go) or start a new chat."
        else:
            advice = "Shorten the message or the system prompt."
        super().__init__(
            f"The conversation is {prompt_tokens} tokens and the model's context is "
            f"{context_length}, leaving too little room for an answer. {advice}"
        )


_process: Any = None


def current_rss_bytes() -> int:
    global _process
    if _process is None:
        import psutil

        _process = psutil.Process()
    return int(_process.memory_info().rss)


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def seeded(sample: Callable[[Any], Any], seed: int | None) -> Callable[[Any], Any]:
    """``sample`` drawing token n from a key made of (seed, n) when a seed is given.

    MLX samples from one global random state; seeding it at each draw makes an answer
    depend only on its seed, not on what else drew in between (compare interleaves two
    generations on one thread). The first draw uses the seed itself.
    """
    if seed is None:
        return sample
    import mlx.core as mx

    draws = itertools.count()

    def draw(logprobs: Any) -> Any:
        n = next(draws)
        mx.random.seed(seed if n == 0 else (seed * 1_000_003 + n) % 2**63)
        return sample(logprobs)

    return draw


class ChatSession:
    """A conversation with one loaded model. Use from the thread that loaded it."""

    def __init__(self, loaded: "LoadedModel", system_prompt: str | None = None) -> None:
        self.loaded = loaded
        self.system_prompt = system_prompt or None
        self.turns: list[Turn] = []
        # Oldest turns of the saved conversation left out to fit the context (drop_oldest_turns).
        self.dropped_turns = 0
        self._cache: list[Any] | None = None
        self._cache_tokens: list[int] = []
        # What the last ContextOverflow was about, so drop_oldest_turns knows how far to go.
        self._overflowed: tuple[str, SamplerSettings, str | None] | None = None

    # ---- history -----------------------------------------------------

    def add_message(self, role: str, text: str) -> None:
        """Replay a saved message: "user" opens a turn, "assistant" answers the last one."""
        if role == "system":
            self.system_prompt = text or None
        elif role == "user":
            self.turns.append(Turn(text))
        elif role == "assistant":
            if self.turns and not self.turns[-1].answer:
                self.turns[-1].answer = text
            else:
                self.turns.append(Turn("", text))

    def pop_turn(self) -> Turn | None:
        """Remove and return the last exchange (to regenerate or edit it)."""
        return self.turns.pop() if self.turns else None

    def reset(self) -> None:
        """Forget the conversation (the loaded model stays)."""
        self.turns.clear()
        self.dropped_turns = 0
        self._cache, self._cache_tokens = None, []

    def messages(self, user_text: str | None = None) -> list[dict]:
        """The conversation as chat messages, answers only, plus ``user_text`` if given."""
        out: list[dict] = []
        if self.system_prompt:
            out.append({"role": "system", "content": self.system_prompt})
        for turn in self.turns:
            # A turn without an answer (stopped while reasoning, failed) is left out
            # whole, so roles still alternate; it stays in `turns` for pop_turn.
            if not turn.answer:
                continue
            if turn.user:
                out.append({"role": "user", "content": turn.user})
            out.append({"role": "assistant", "content": turn.answer})
        if user_text is not None:
            out.append({"role": "user", "content": user_text})
        return out

    def drop_oldest_turns(self, n: int | None = None) -> int:
        """Drop ``n`` oldest turns, or (None) as many as the last overflow needs; returns how many."""
        if n is None:
            n = 1
            if self._overflowed is not None:
                text, sampler, effort = self._overflowed
                while n < len(self.turns) and not self._fits(
                    self._render(text, effort, skip=n), sampler.max_tokens
                ):
                    n += 1
        n = min(n, len(self.turns))
        del self.turns[:n]
        self.dropped_turns += n
        self._overflowed = None
        return n

    # ---- generation --------------------------------------------------

    def _render(self, user_text: str, effort: str | None, skip: int = 0) -> list[int]:
        kept, self.turns = self.turns, self.turns[skip:]
        try:
            return self.loaded.format.render(self.messages(user_text), effort)
        finally:
            self.turns = kept

    def _new_parser(self, prompt: list[int]) -> Any:
        """The stream parser for one answer (a subclass may wrap it, e.g. to find tool calls)."""
        return self.loaded.format.new_parser(prompt)

    def _fits(self, prompt: Sequence[int], max_tokens: int) -> bool:
        return len(prompt) + min(max_tokens, MIN_ANSWER_ROOM) <= self.loaded.context_length

    def _prepare_cache(self, prompt: list[int]) -> tuple[list[Any], list[int]]:
        """The KV cache to continue from and the prompt tokens it still needs."""
        from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache, trim_prompt_cache

        if self._cache is not None:
            # At least one token must be fed to get the next token's logits.
            keep = min(_common_prefix(self._cache_tokens, prompt), len(prompt) - 1)
            excess = len(self._cache_tokens) - keep
            if excess == 0 or (
                can_trim_prompt_cache(self._cache) and trim_prompt_cache(self._cache, excess) == excess
            ):
                self._cache_tokens = self._cache_tokens[:keep]
                return self._cache, prompt[keep:]
        self._cache = make_prompt_cache(self.loaded.model)
        self._cache_tokens = []
        return self._cache, prompt

    def _cache_offset(self) -> int | None:
        return getattr(self._cache[0], "offset", None) if self._cache else None

    def generate(
        self,
        user_text: str,
        sampler: SamplerSettings = SamplerSettings(),
        effort: str | None = None,
        cancel: threading.Event | None = None,
        *,
        logits_processors: list[Callable[[Any, Any], Any]] | None = None,
    ) -> Iterator[ReasoningDelta | AnswerDelta | StatsUpdate | Finished]:
        """Answer ``user_text``; yields text deltas, stats, and a final :class:`Finished`.

        Raises :class:`ContextOverflow` before yielding anything when the
        conversation does not fit; the history is then unchanged. The turn is
        kept even when its answer came out empty, so :meth:`pop_turn` matches
        what the user sees, but such a turn is not replayed to the model.
        """
        import mlx.core as mx
        from mlx_lm import stream_generate
        from mlx_lm.sample_utils import make_sampler

        fmt = self.loaded.format
        effort = fmt.normalize_effort(effort)
        prompt = self._render(user_text, effort)
        if not self._fits(prompt, sampler.max_tokens):
            self._overflowed = (user_text, sampler, effort)
            raise ContextOverflow(len(prompt), self.loaded.context_length, len(self.turns))
        self._overflowed = None
        max_tokens = min(sampler.max_tokens, self.loaded.context_length - len(prompt))

        turn = Turn(user_text)
        self.turns.append(turn)
        parser = self._new_parser(prompt)
        cache, feed = self._prepare_cache(prompt)
        mx.reset_peak_memory()

        def prefill_progress(_done: int, _total: int) -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled()

        start = time.perf_counter()
        first_token_at: float | None = None
        seen: list[int] = []
        answer: list[str] = []
        reasoning: list[str] = []
        reasoning_tokens = 0
        reason = "error"
        error: str | None = None
        last_stats = start
        response = None

        def snapshot(now: float) -> GenStats:
            r = response
            return GenStats(
                ttft_s=None if first_token_at is None else first_token_at - start,
                prompt_tokens=r.prompt_tokens if r else 0,
                prompt_tps=r.prompt_tps if r else 0.0,
                gen_tokens=r.generation_tokens if r else 0,
                gen_tps=r.generation_tps if r else 0.0,
                mlx_active_bytes=mx.get_active_memory(),
                mlx_peak_bytes=mx.get_peak_memory(),
                rss_bytes=current_rss_bytes(),
                reasoning_tokens=reasoning_tokens,
                elapsed_s=now - start,
            )

        stream = stream_generate(
            self.loaded.model,
            self.loaded.tokenizer,
            mx.array(feed),
            max_tokens=max_tokens,
            sampler=seeded(
                make_sampler(temp=sampler.temperature, top_p=sampler.top_p, top_k=sampler.top_k, min_p=sampler.min_p),
                sampler.seed,
            ),
            logits_processors=logits_processors,
            prompt_cache=cache,
            prefill_step_size=PREFILL_STEP,
            prompt_progress_callback=prefill_progress,
            # From the first token (mlx-lm's default start): the plan counted the whole cache at kv_bits.
            **({"kv_bits": self.loaded.kv_bits, "quantized_kv_start": 0} if self.loaded.kv_bits else {}),
        )
        try:
            for response in stream:
                seen.append(response.token)
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                deltas = parser.feed(response.token, response.text)
                if response.finish_reason is not None:
                    deltas += parser.finish()
                    reason = response.finish_reason
                for delta in deltas:
                    if type(delta) is ReasoningDelta:
                        reasoning.append(delta.text)
                    else:
                        answer.append(delta.text)
                    yield delta
                if deltas and type(deltas[0]) is ReasoningDelta:
                    reasoning_tokens += 1
                if cancel is not None and cancel.is_set() and response.finish_reason is None:
                    reason = "cancelled"
                    break
                now = time.perf_counter()
                if now - last_stats >= STATS_INTERVAL_S and response.finish_reason is None:
                    last_stats = now
                    yield StatsUpdate(snapshot(now))
            if reason == "cancelled":
                for delta in parser.finish():
                    (reasoning if type(delta) is ReasoningDelta else answer).append(delta.text)
                    yield delta
        except Cancelled:
            reason = "cancelled"
        except Exception as exc:  # noqa: BLE001 - a failed generation ends the stream, the app lives on
            reason, error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            stream.close()
            self._settle_cache(prompt=prompt, seen=seen, prefilled=first_token_at is not None)
        turn.answer, turn.reasoning = "".join(answer), "".join(reasoning)
        stats = snapshot(time.perf_counter())
        yield StatsUpdate(stats)
        yield Finished(reason, stats, error)  # type: ignore[arg-type]

    def _settle_cache(self, *, prompt: list[int], seen: list[int], prefilled: bool) -> None:
        """Record what the KV cache now holds; drop it when that is not certain."""
        tokens = [*prompt, *seen]
        if not prefilled or self._cache_offset() != len(tokens):
            self._cache, self._cache_tokens = None, []
        else:
            self._cache_tokens = tokens
