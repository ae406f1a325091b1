"""Quick eval: how close each model is to a reference, on held-out text.

For every model: mean per-token KL(reference || model) with a 95% interval
over sequences, its 99th percentile, top-1 agreement with the reference,
perplexity of the text (and its ratio to the reference's), flips (greedy
answers on the shipped prompts that differ from the reference's), bits per
weight, size on disk, and (optionally) the retrieval probe. Models are loaded one at
a time; the reference's log-probabilities are computed once and kept (in
memory up to a budget, then spilled to a temporary folder) so each model is
compared with exactly the same numbers.
"""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

import mlx.core as mx

from optiq_tui.measures.flips import ANSWER_TOKENS, compare_answers, flip_prompts, greedy_answers
from optiq_tui.measures.metrics import (
    kl_from_logprobs,
    kl_interval,
    kl_stats,
    log_softmax,
    perplexity_from_nll,
    top1_from_matches,
)
from optiq_tui.eval.results import EvalReport, EvalSettings, ModelEval, ModelEvaluated
from optiq_tui.eval.retrieval import DEFAULT_CONTEXTS, DEFAULT_HOPS, probe_plan, run_probe
from optiq_tui.measures.texts import heldout_tokens
from optiq_tui.progress import Log, OptiqError, Progress, ProgressFn, check_cancel, no_progress
from optiq_tui.settings import paths

# Reference log-probs beyond this stay on disk, not in memory (a 512-token
# sequence of a 200k-vocabulary model is 400 MB in float32).
REF_CACHE_MEMORY_BYTES = 1 << 30


def evaluate(
    models: Sequence[Any],
    reference: Any | None,
    *,
    text: str | Path | None = None,
    seq_len: int = 512,
    max_tokens: int = 8192,
    retrieval: bool = True,
    contexts: Sequence[int] = DEFAULT_CONTEXTS,
    hops: Sequence[int] = DEFAULT_HOPS,
    trials: int = 2,
    compute: str = "auto",
    flips: bool = True,
    flip_tokens: int = ANSWER_TOKENS,
    progress: ProgressFn = no_progress,
    cancel: threading.Event | None = None,
) -> EvalReport:
    """Evaluate ``models`` (ModelInfo) against ``reference`` (ModelInfo or None).

    ``compute``: "float32" runs every model with float32 weights and
    activations (quantized layers dequantized exactly), "native" in the
    model's own dtypes, "auto" float32 on CPU (where float16 and quantized
    matmuls are slow and float32 uses BLAS) and native on Metal. Float32
    isolates the error of the quantized weights from activation rounding.
    ``flips`` (needs a reference): greedy answers of ``flip_tokens`` tokens on
    the shipped flip prompts, the reference's kept while the next model loads.
    """
    started = time.monotonic()
    models = [m for m in models if reference is None or Path(m.path) != Path(reference.path)]
    if not models and reference is None:
        raise OptiqError("nothing to evaluate; give at least one model")
    runs = ([reference] if reference is not None else []) + list(models)
    tokenizer = _shared_tokenizer(runs)
    sequences = heldout_tokens(tokenizer, max_tokens=max_tokens, seq_len=seq_len, text=text)
    mode = _compute_mode(compute, runs)
    n_probes = sum(
        len(probe_plan(contexts, hops, trials, getattr(r, "context_length", None))) for r in runs
    )
    flips = flips and reference is not None
    prompts = flip_prompts() if flips else []
    total = len(runs) * (len(sequences) + len(prompts)) + (n_probes if retrieval else 0)
    done = 0

    def step(name: str, what: str) -> None:
        nonlocal done
        done += 1
        progress(Progress("eval", done, total, f"{name}: {what}", "steps"))

    rows: list[ModelEval] = []
    ref_answers: list[str] = []
    ref_ppl: float | None = None
    cache = _RefCache(REF_CACHE_MEMORY_BYTES)
    try:
        for info in runs:
            is_ref = reference is not None and info is reference
            progress(Log(f"evaluating {info.name}" + (" (reference)" if is_ref else "")))
            loaded = _load(info, mode, progress, cancel)
            try:
                kls, matches, nlls = [], [], []
                for i, seq in enumerate(sequences):
                    check_cancel(cancel)
                    logp = _logprobs(loaded.model, seq)
                    targets = mx.array(seq[1:])
                    nlls.append(-mx.take_along_axis(logp, targets[:, None], axis=-1)[:, 0])
                    if is_ref:
                        cache.put(i, logp)
                    elif reference is not None:
                        ref = cache.get(i)
                        if ref.shape != logp.shape:
                            raise OptiqError(
                                f"{info.name} predicts {logp.shape[-1]} tokens but the reference "
                                f"{reference.name} predicts {ref.shape[-1]}; they are not the same family"
                            )
                        kls.append(kl_from_logprobs(ref, logp))
                        matches.append(mx.argmax(ref, axis=-1) == mx.argmax(logp, axis=-1))
                    mx.eval(nlls[-1], *kls[-1:], *matches[-1:])
                    step(info.name, f"text {i + 1}/{len(sequences)}")
                answers = []
                for n, prompt in enumerate(prompts):  # one at a time: cancellable between prompts
                    check_cancel(cancel)
                    answers += greedy_answers(loaded.model, loaded.tokenizer, [prompt], flip_tokens)
                    step(info.name, f"flip prompt {n + 1}/{len(prompts)}")
                probe = None
                if retrieval:
                    probe = run_probe(
                        loaded,
                        contexts=contexts,
                        hops=hops,
                        trials=trials,
                        progress=lambda ev, name=info.name: _probe_step(ev, name, step),
                        cancel=cancel,
                    )
            finally:
                del loaded
                _free()
            if is_ref:
                ref_answers = answers
            row = _row(info, is_ref, reference is not None, kls, matches, nlls, probe)
            if is_ref:
                ref_ppl = row.ppl
            row = _with_receipts(row, kls, ref_ppl, prompts, ref_answers, answers)
            rows.append(row)
            progress(ModelEvaluated(row))
    finally:
        cache.close()
    settings = EvalSettings(
        seq_len=seq_len,
        max_tokens=max_tokens,
        text=str(text) if text is not None else "shipped held-out text",
        n_sequences=len(sequences),
        n_tokens=sum(len(s) - 1 for s in sequences),
        compute=mode,
        retrieval=retrieval,
        contexts=tuple(contexts) if retrieval else (),
        hops=tuple(hops) if retrieval else (),
        trials=trials if retrieval else 0,
        flips=flips,
        flip_tokens=flip_tokens if flips else 0,
    )
    return EvalReport(
        rows=rows,
        reference=reference.name if reference is not None else None,
        settings=settings,
        elapsed_s=round(time.monotonic() - started, 2),
    )


def _probe_step(event: Any, name: str, step) -> None:
    # run_probe reports "i of n" before each case and once at the end; count the ends.
    if isinstance(event, Progress) and event.done > 0:
        step(name, f"retrieval probe {int(event.done)}/{int(event.total or 0)}")


def _row(info, is_ref, has_ref, kls, matches, nlls, probe) -> ModelEval:
    ppl = perplexity_from_nll(nlls)
    if is_ref:
        mean_kl, p99_kl, top1 = 0.0, 0.0, 1.0
    elif has_ref:
        stats = kl_stats(kls)
        mean_kl, p99_kl, top1 = stats.mean, stats.p99, top1_from_matches(matches).rate
    else:
        mean_kl = p99_kl = top1 = None
    return ModelEval(
        name=info.name,
        bpw=info.bpw,
        size_bytes=info.size_bytes,
        mean_kl=mean_kl,
        p99_kl=p99_kl,
        ppl=ppl.ppl,
        top1=top1,
        retrieval=probe.mean if probe is not None else None,
        path=str(info.path),
        quant=info.quant,
        is_reference=is_ref,
        n_tokens=ppl.n,
        retrieval_cases=probe.cases if probe is not None else (),
    )


def _with_receipts(row: ModelEval, kls: list[mx.array], ref_ppl: float | None,
                   prompts: list[str], ref_answers: list[str], answers: list[str]) -> ModelEval:
    """``row`` with its KL interval, perplexity ratio and flips against the reference."""
    extra: dict[str, Any] = {}
    if row.is_reference:
        extra.update(kl_low=0.0, kl_high=0.0, ppl_ratio=1.0)
    elif kls:
        ci = kl_interval(kls)  # one sequence has no interval: NaN, stored as None
        extra.update(kl_low=_or_none(ci.low), kl_high=_or_none(ci.high))
    if ref_ppl is not None and not row.is_reference:
        extra["ppl_ratio"] = row.ppl / ref_ppl
    if prompts:
        flips = compare_answers(prompts, ref_answers, answers)
        flipped = tuple((prompts[i], ref_answers[i], answers[i]) for i in flips.changed)
        extra.update(flips=len(flipped), flip_prompts=len(prompts), flipped=flipped)
    return replace(row, **extra)


def _or_none(value: float) -> float | None:
    return None if value != value else value


def _logprobs(model: Any, seq: list[int]) -> mx.array:
    """float32 log-probs ``[len(seq) - 1, vocab]``: position i predicts token i + 1."""
    logits = model(mx.array(seq[:-1])[None])[0]
    return log_softmax(logits)


def _shared_tokenizer(runs: Sequence[Any]) -> Any:
    """The common tokenizer; OptiqError naming the odd one out when vocabularies differ."""
    from mlx_lm.utils import load_tokenizer

    first, first_vocab, tokenizer = None, None, None
    for info in runs:
        tok = load_tokenizer(Path(info.path))
        vocab = tok.get_vocab()
        if first is None:
            first, first_vocab, tokenizer = info, vocab, tok
        elif vocab != first_vocab:
            raise OptiqError(
                f"{info.name} and {first.name} do not share a tokenizer "
                f"({len(vocab)} vs {len(first_vocab)} tokens, or different tokens); "
                "KL and top-1 agreement compare the same token ids, so evaluate models of one family together"
            )
    return tokenizer


def _compute_mode(compute: str, runs: Sequence[Any]) -> str:
    if compute in ("float32", "native"):
        return compute
    if compute != "auto":
        raise OptiqError(f"compute must be auto, float32 or native, not {compute!r}")
    if mx.metal.is_available():
        return "native"
    # float32 doubles an fp16 model's memory; stay native when that would not fit comfortably.
    largest = max(getattr(r, "n_params", 0) or 0 for r in runs)
    return "float32" if largest * 4 < _physical_memory() // 2 else "native"


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def _load(info: Any, mode: str, progress: ProgressFn, cancel: threading.Event | None) -> Any:
    from optiq_tui.engine.loader import load

    loaded = load(info, progress=progress, cancel=cancel)
    if mode == "float32":
        _to_float32(loaded.model)
    return loaded


def _to_float32(model: Any) -> None:
    """Float32 weights, quantized layers dequantized exactly (scales cast first,
    so the dequantized values are not rounded to float16 on the way)."""
    from mlx_lm.utils import dequantize_model

    model.set_dtype(mx.float32)
    dequantize_model(model)
    model.set_dtype(mx.float32)
    mx.eval(model.parameters())


def _free() -> None:
    gc.collect()
    mx.clear_cache()


class _RefCache:
    """Reference log-probs per sequence: in memory up to ``budget`` bytes, then on disk."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._used = 0
        self._memory: dict[int, mx.array] = {}
        self._folder: Path | None = None

    def put(self, i: int, logp: mx.array) -> None:
        mx.eval(logp)
        if self._used + logp.nbytes <= self._budget:
            self._memory[i] = logp
            self._used += logp.nbytes
            return
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="eval-ref.", dir=paths().cache))
        mx.save(str(self._folder / f"{i}.npy"), logp)

    def get(self, i: int) -> mx.array:
        if i in self._memory:
            return self._memory[i]
        assert self._folder is not None
        return mx.load(str(self._folder / f"{i}.npy"))

    def close(self) -> None:
        self._memory.clear()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None
