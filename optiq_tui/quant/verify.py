"""Held-out quality of a written quant, loaded back with stock mlx_lm.load.

The written weights are dequantized block by block and run in float32 (the
same values QuantizedLinear computes with; float32 matmuls are far faster
than quantized ones on a CPU) through the model's own code (``Backbone``),
next to the source and a uniform 4-bit g64 quantize-dequantize of the same
source weights.

Memory: one model's weights at a time. Phase 1 holds the source and keeps,
per held-out sequence, only the final hidden states of the source and of
uniform 4-bit (tokens x hidden floats, 4.7 MB for 2048 tokens of a 576-wide
model) plus uniform 4-bit's embedding / head. Phase 2 frees the source, loads
the quant and computes its final hidden states with a weightless skeleton of
the source's modules. The logits of all three then come from the skeleton's
own tail with each one's embedding / head swapped in, 128 tokens at a time, so
full-vocabulary log-probabilities are never stored (2048 x 49152 float32
would be 400 MB; the three models' [128, vocab] logits and log-softmax temporaries
are some 160 MB). Phase 1 streams the source's blocks from disk
(``Backbone.stream_blocks``), so it holds the head and one block.
"""

from __future__ import annotations

import gc
import threading
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from optiq_tui.measures.flips import compare_answers, flip_prompts, greedy_answers
from optiq_tui.measures.metrics import kl_interval, kl_stats, log_softmax, perplexity_from_nll, top1_from_matches
from optiq_tui.measures.texts import heldout_tokens
from optiq_tui.progress import Progress, ProgressFn, check_cancel, no_progress
from optiq_tui.quant.backbone import TOKEN_CHUNK, Backbone, WeightFn
from optiq_tui.quant.layers import BitBudget, QuantItem, dequantize_rows, get_module
from optiq_tui.quant.probes import choice_weight_fn


def loaded_weight_fn(model: nn.Module) -> WeightFn:
    """The weights of a loaded (quantized) model, dequantized to their stored dtype."""
    def fn(path: str, w: mx.array) -> mx.array:
        m = get_module(model, path)
        if "scales" in m:
            return dequantize_rows(m.weight, m.scales, m.get("biases"), m.group_size, m.bits, m.mode)
        return m.weight
    return fn


def _final_states(bb: Backbone, seqs: list[list[int]], weight_fn: WeightFn | None,
                  outside: dict[str, mx.array], cancel: threading.Event | None) -> list[mx.array]:
    """Hidden states [1, T, d] after the last block, for each sequence."""
    check_cancel(cancel)
    return bb.forward_hidden([bb.embed(s, outside) for s in seqs], weight_fn)


def _compare(bb: Backbone, ref: list[mx.array],
             others: dict[str, tuple[list[mx.array], dict[str, mx.array]]], seqs: list[list[int]],
             cancel: threading.Event | None) -> tuple[list[mx.array], dict[str, dict[str, list]]]:
    """Per-token reference NLL, and each other model's KL / top-1 / NLL against it
    (``others``: name -> (final states, embedding / head weights for the tail))."""
    stats = {name: {"kl": [], "top1": [], "nll": [], "kl_by_seq": []} for name in others}
    ref_nll = []
    for i, seq in enumerate(seqs):
        check_cancel(cancel)
        for s in stats.values():
            s["kl_by_seq"].append([])
        targets = mx.array(seq[1:])
        ref_chunks = bb.logits_chunks(ref[i], chunk=TOKEN_CHUNK)
        other_chunks = [bb.logits_chunks(states[i], w, chunk=TOKEN_CHUNK) for states, w in others.values()]
        for n, ref_logits in enumerate(ref_chunks):
            t = n * TOKEN_CHUNK
            n_pred = max(0, min(TOKEN_CHUNK, len(seq) - 1 - t))  # positions with a true next token
            tgt = targets[t:t + n_pred]
            ref_lp = log_softmax(ref_logits)
            del ref_logits
            ref_p = mx.exp(ref_lp)
            ref_top = mx.argmax(ref_lp, axis=-1)
            ref_nll.append(-mx.take_along_axis(ref_lp[:n_pred], tgt[:, None], axis=-1)[:, 0])
            mx.eval(ref_lp, ref_p, ref_top, ref_nll[-1])
            # One model's [128, vocab] logits at a time, each freed before the next is made
            # (a zip over the generators held every model's, and the previous chunk's: +230 MB).
            for name, chunks in zip(others, other_chunks):
                lp = log_softmax(next(chunks))
                s = stats[name]
                s["kl"].append(mx.maximum(mx.sum(ref_p * (ref_lp - lp), axis=-1), 0.0))
                s["kl_by_seq"][-1].append(s["kl"][-1])
                s["top1"].append(mx.argmax(lp, axis=-1) == ref_top)
                s["nll"].append(-mx.take_along_axis(lp[:n_pred], tgt[:, None], axis=-1)[:, 0])
                mx.eval(s["kl"][-1], s["top1"][-1], s["nll"][-1])
                del lp
            del ref_lp, ref_p
    return ref_nll, stats


def _summary(s: dict[str, list], bpw: float, source_ppl: float) -> dict[str, float]:
    kl = kl_stats(s["kl"])
    # _compare appends one KL array per 128-token chunk; the interval resamples whole sequences.
    ci = kl_interval(mx.concatenate(kls) for kls in s["kl_by_seq"])
    ppl = perplexity_from_nll(s["nll"]).ppl
    return {"bpw": bpw, "mean_kl": kl.mean, "p99_kl": kl.p99,
            "top1": top1_from_matches(s["top1"]).rate, "ppl": ppl,
            # One sequence has no interval (NaN): None keeps the JSON strict.
            "kl_low": _or_none(ci.low), "kl_high": _or_none(ci.high), "kl_sequences": ci.sequences,
            "ppl_ratio": ppl / source_ppl}


def _or_none(value: float) -> float | None:
    return None if value != value else value


def _answers(model: nn.Module, tokenizer: Any, prompts: list[str],
             cancel: threading.Event | None) -> list[str]:
    """Greedy answers to the flip prompts, one at a time so a cancel stops between them."""
    out = []
    for prompt in prompts:
        check_cancel(cancel)
        out += greedy_answers(model, tokenizer, [prompt])
    return out


def held_out_quality(
    source_path: Path,
    quant_path: Path,
    load_source: Callable[[Path], tuple[nn.Module, Any, dict]],
    quant_bpw: float,
    items: list[QuantItem],
    budget: BitBudget,
    *,
    n_tokens: int = 2048,
    checked: bool = False,
    flips: bool = False,
    progress: ProgressFn = no_progress,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Mean/p99 KL, top-1 and perplexity of the quant at ``quant_path`` and of uniform 4-bit,
    against the source at ``source_path`` (``load_source`` gives model, tokenizer, config).
    Unless ``checked`` (the measurement already ran the guard on this source), the
    measurement forward is first compared with the source's own. With ``flips``, the
    source's greedy answers to the shipped flip prompts are made while it is loaded and
    the quant's from the stock-loaded quant, so one model's weights are held at a time."""
    from mlx_lm import load

    progress(Progress("verify", 0, 3, "source"))
    src, tokenizer, src_cfg = load_source(source_path)
    bb = Backbone(src, src_cfg, hint="pass --no-verify to write it without a quality figure")
    seqs = heldout_tokens(tokenizer, max_tokens=n_tokens, seq_len=512)
    if not checked:
        bb.check(seqs[0], seqs[-1])
    prompts = flip_prompts() if flips else []
    source_answers = _answers(src, tokenizer, prompts, cancel)  # before its blocks go to disk
    bb.stream_blocks(source_path)
    ref_states = _final_states(bb, seqs, None, {}, cancel)
    progress(Progress("verify", 1, 3, "uniform 4-bit"))
    four = {i.path: 4 for i in items if i.quantizable}
    four_fn = choice_weight_fn(four, 64)
    # Kept in the stored dtype: uniform 4-bit's embedding / head, what a
    # QuantizedEmbedding / QuantizedLinear would compute with.
    uni_outside = bb.outside_weights(four_fn)
    uni_states = _final_states(bb, seqs, four_fn, uni_outside, cancel)
    del bb, src
    gc.collect()
    mx.clear_cache()

    progress(Progress("verify", 2, 3, "this quant"))
    quant_model, quant_tok = load(str(quant_path))  # stock loader: proves the folder loads unaided
    quant_answers = _answers(quant_model, quant_tok, prompts, cancel)
    # A weightless skeleton of the source's modules (lazy: a weight is read from the source
    # files only if used), run with the quant's dequantized weights swapped in.
    skeleton, _, skel_cfg = load(str(source_path), return_config=True, lazy=True)
    if any("scales" in m for _, m in skeleton.named_modules()):  # a --dequantize source
        from mlx_lm.utils import dequantize_model

        dequantize_model(skeleton)  # lazy as well: its weights are replaced, never computed
    qbb = Backbone(skeleton, skel_cfg)
    quant_fn = loaded_weight_fn(quant_model)
    quant_outside = qbb.outside_weights(quant_fn)
    quant_states = _final_states(qbb, seqs, quant_fn, quant_outside, cancel)
    del quant_fn, quant_model  # its blocks are done and its embedding / head are copied out
    gc.collect()

    # The source's own tail is the skeleton's: its embedding / head read from the source files.
    ref_nll, stats = _compare(
        qbb, ref_states,
        {"quant": (quant_states, quant_outside), "uniform4": (uni_states, uni_outside)},
        seqs, cancel)
    progress(Progress("verify", 3, 3, "done"))
    source_ppl = perplexity_from_nll(ref_nll).ppl
    quality = {
        "tokens": sum(len(s) for s in seqs),
        "source_ppl": source_ppl,
        "quant": _summary(stats["quant"], quant_bpw, source_ppl),
        "uniform4": _summary(stats["uniform4"], replace(budget, group_size=64).bpw(items, four), source_ppl),
    }
    if flips:  # uniform 4-bit is never a loaded model here, so only the quant's
        quality["quant"]["flips"] = asdict(compare_answers(prompts, source_answers, quant_answers))
    return quality
