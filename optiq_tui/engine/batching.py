"""Concurrent API requests on one model, generated together with mlx-lm's ``BatchGenerator``.

A request answered alone (engine/completion.py) that sees others queued behind
it moves into a batch with them: its tokens so far are prefilled again in the
batch (its own KV cache is not a batch cache) and it goes on from there;
requests queued while the batch runs join it between steps. Each request keeps
its own parser, stop strings, sampler and cancel, and its job ends as soon as
its own answer does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from optiq_tui.engine.completion import Completion
from optiq_tui.engine.events import Finished, GenStats, ReasoningDelta, StatsUpdate
from optiq_tui.engine.session import MIN_ANSWER_ROOM, PREFILL_STEP, STATS_INTERVAL_S, ContextOverflow, current_rss_bytes, seeded

if TYPE_CHECKING:
    from optiq_tui.engine.loader import LoadedModel


@dataclass
class _Member:
    completion: Completion
    end: Callable[..., None] | None  # None: the request whose job drives the batch returns by itself
    detokenizer: Any
    joined: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_stats: float = 0.0
    reasoning_tokens: int = 0


def _adopted(loaded: "LoadedModel", handle: Any) -> Completion | None:
    """A queued request taken into the batch, or None when it fails before generating (its job ends)."""
    args = {k: v for k, v in handle.args.items() if k != "model"}
    try:
        completion = Completion(loaded, handle.emit, handle.cancel, **args)
        room = min(completion.settings.max_tokens, MIN_ANSWER_ROOM)
        if len(completion.prompt) + room > loaded.context_length:
            raise ContextOverflow(len(completion.prompt), loaded.context_length, 0)
    except Exception as exc:  # noqa: BLE001 - one bad request ends its own job, not the batch
        handle.end(error=str(exc) if isinstance(exc, ContextOverflow) else f"{type(exc).__name__}: {exc}")
        return None
    completion.wrap(loaded.format.new_parser(completion.prompt))
    return completion


def _stats(member: _Member, now: float) -> GenStats:
    import mlx.core as mx

    c = member.completion
    base = c.base_stats or GenStats()
    n = len(c.tokens)
    since = member.first_token_at or now
    return GenStats(ttft_s=base.ttft_s if base.ttft_s is not None else
                    (None if member.first_token_at is None else member.first_token_at - member.joined),
                    prompt_tokens=len(c.prompt) + (base.gen_tokens if c.base_stats else 0),
                    prompt_tps=base.prompt_tps, gen_tokens=n,
                    gen_tps=(n - base.gen_tokens) / (now - since) if now > since else 0.0,
                    mlx_active_bytes=mx.get_active_memory(), mlx_peak_bytes=mx.get_peak_memory(),
                    rss_bytes=current_rss_bytes(), reasoning_tokens=base.reasoning_tokens + member.reasoning_tokens,
                    elapsed_s=base.elapsed_s + now - member.joined)


def _end(member: _Member, reason: str) -> None:
    c = member.completion
    c.take(Finished(reason, _stats(member, time.perf_counter())))  # type: ignore[arg-type]
    if member.end is None:
        return  # the driving request's job returns its own result
    if c.cancel.is_set():
        member.end(cancelled=True)
    else:
        member.end(result=c.result())


def run_batch(loaded: "LoadedModel", driver: Completion | None, adopted: list, adopt: Callable[[], list]) -> None:
    """Generate ``driver`` (if it has not ended) and the ``adopted`` requests together, taking in newcomers."""
    from mlx_lm.generate import BatchGenerator
    from mlx_lm.sample_utils import make_sampler

    tokenizer = loaded.tokenizer
    gen = BatchGenerator(loaded.model, stop_tokens=[[t] for t in tokenizer.eos_token_ids],
                         prefill_step_size=PREFILL_STEP)
    members: dict[int, _Member] = {}

    def add(c: Completion, end: Callable[..., None] | None) -> None:
        c.handing_over = False  # from here its parser is finished normally, at its end in the batch
        room = min(c.settings.max_tokens, loaded.context_length - len(c.prompt)) - len(c.tokens)
        detokenizer = tokenizer.detokenizer
        for token in c.tokens:  # its text so far was shown already (c.shown characters)
            detokenizer.add_token(token)
        member = _Member(c, end, detokenizer)
        if room <= 0:
            _end(member, "length")
            return
        s = c.settings
        sampler = seeded(make_sampler(temp=s.temperature, top_p=s.top_p, top_k=s.top_k, min_p=s.min_p), s.seed)
        uid = gen.insert([c.prompt + c.tokens], max_tokens=[room], samplers=[sampler])[0]
        members[uid] = member

    def take_in(handles: list) -> None:
        for handle in handles:
            c = _adopted(loaded, handle)
            if c is not None:
                add(c, handle.end)

    try:
        if driver is not None:
            add(driver, None)
        take_in(adopted)
        while members:
            for uid, member in list(members.items()):
                c = member.completion
                if c.cancel.is_set() or c.stopped.is_set():
                    gen.remove([uid])
                    del members[uid]
                    _end(member, "cancelled")
            take_in(adopt())
            if not members:
                break
            for response in gen.next_generated():
                member = members.get(response.uid)
                if member is None:
                    continue
                _step(member, response.token, response.finish_reason)
                if response.finish_reason is not None:
                    del members[response.uid]
                    _end(member, response.finish_reason)
    finally:
        gen.close()


def _step(member: _Member, token: int, finish_reason: str | None) -> None:
    """One generated token of one member: detokenize, parse, send on (as ChatSession.generate does)."""
    c, detokenizer = member.completion, member.detokenizer
    now = time.perf_counter()
    if member.first_token_at is None:
        member.first_token_at = now
    if finish_reason != "stop":  # a stop token is not text
        detokenizer.add_token(token)
    if finish_reason is not None:
        detokenizer.finalize()
    assert c.parser is not None
    deltas = c.parser.feed(token, detokenizer.text[c.shown:])
    if finish_reason is not None:
        deltas += c.parser.finish()
    for delta in deltas:
        c.take(delta)
    if deltas and type(deltas[0]) is ReasoningDelta:
        member.reasoning_tokens += 1
    if finish_reason is None and now - member.last_stats >= STATS_INTERVAL_S:
        member.last_stats = now
        c.take(StatsUpdate(_stats(member, now)))
