"""Held-out quality of a written quant, loaded back with stock mlx_lm.load.

The written weights are dequantized block by block and run in float32 (the
same values QuantizedLinear computes with; float32 matmuls are far faster
than quantized ones on a CPU), next to the source and a uniform 4-bit g64
quantize-dequantize of the same source weights.

Memory: one model's weights at a time. Phase 1 holds the source and keeps,
per held-out sequence, only the final hidden states of the source and of
uniform 4-bit (tokens x hidden floats, 4.7 MB for 2048 tokens of a 576-wide
model) plus the output projection as the source, uniform 4-bit and (phase 2)
the quant compute with it, in the stored dtype (3 x 56 MB here). Phase 2 frees
the source, loads the quant and computes its final hidden states. The logits
of all three are then recomputed exactly from those states, 64 tokens and one
vocabulary slice at a time, so full-vocabulary log-probabilities are never
stored (2048 x 49152 float32 would be 400 MB). Phase 1 streams the source's
blocks from disk (``Backbone.stream_blocks``), so it holds the head and one
block; phase 2 would do the same with the quant's files to run on models
larger than memory; what crosses the phases is hidden states and output
projections (vocab x hidden, a few percent of a large model).
"""

from __future__ import annotations

import gc
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn

from optiq_tui.eval.metrics import kl_stats, log_softmax, perplexity_from_nll, top1_from_matches
from optiq_tui.eval.texts import heldout_tokens
from optiq_tui.progress import Progress, ProgressFn, check_cancel, no_progress
from optiq_tui.quant.backbone import VOCAB_CHUNK, Backbone, WeightFn
from optiq_tui.quant.layers import BitBudget, QuantItem, dequantize_rows, get_module
from optiq_tui.quant.probes import choice_weight_fn

# Tokens per logits slice: [64, vocab] float32 keeps the three models' logits and
# their log-softmax temporaries to some 80 MB for a 49k vocabulary.
TOKEN_CHUNK = 64



def loaded_weight_fn(model: nn.Module) -> WeightFn:
    """The weights of a loaded (quantized) model, dequantized to their stored dtype."""
    def fn(path: str, w: mx.array) -> mx.array:
        m = get_module(model, path)
        if "scales" in m:
            return dequantize_rows(m.weight, m.scales, m.get("biases"), m.group_size, m.bits, m.mode)
        return m.weight
    return fn


def _final_states(bb: Backbone, seqs: list[list[int]], weight_fn: WeightFn | None,
                  embed_rows: Callable[[mx.array], mx.array],
                  cancel: threading.Event | None) -> list[mx.array]:
    """Hidden states [T, d] after the last block, for each sequence."""
    check_cancel(cancel)
    hs = [embed_rows(mx.array(s)).astype(mx.float32)[None] for s in seqs]
    hs = bb.forward_hidden(hs, weight_fn)
    return [h[0] for h in hs]


def _compare(norm: nn.Module, vocab: int, ref: tuple[list[mx.array], mx.array],
             others: dict[str, tuple[list[mx.array], mx.array]], seqs: list[list[int]],
             cancel: threading.Event | None) -> tuple[list[mx.array], dict[str, dict[str, list]]]:
    """Per-token reference NLL, and each other model's KL / top-1 / NLL against it."""
    stats = {name: {"kl": [], "top1": [], "nll": []} for name in others}
    ref_nll = []

    def logits(h: mx.array, head: mx.array) -> mx.array:
        # Evaluated slice by slice: one float32 copy of a vocabulary slice of the head alive
        # at a time (left lazy, MLX may cast every slice before the first matmul).
        x = norm(h)
        pieces = []
        for r in range(0, vocab, VOCAB_CHUNK):
            pieces.append(x @ head[r:r + VOCAB_CHUNK].astype(mx.float32).T)
            mx.eval(pieces[-1])
        return mx.concatenate(pieces, -1)

    for i, seq in enumerate(seqs):
        check_cancel(cancel)
        targets = mx.array(seq[1:])
        for t in range(0, len(seq), TOKEN_CHUNK):
            n_pred = max(0, min(TOKEN_CHUNK, len(seq) - 1 - t))  # positions with a true next token
            tgt = targets[t:t + n_pred]
            ref_lp = log_softmax(logits(ref[0][i][t:t + TOKEN_CHUNK], ref[1]))
            ref_p = mx.exp(ref_lp)
            mx.eval(ref_lp, ref_p)
            ref_top = mx.argmax(ref_lp, axis=-1)
            ref_nll.append(-mx.take_along_axis(ref_lp[:n_pred], tgt[:, None], axis=-1)[:, 0])
            outs = [ref_nll[-1]]
            for name, (states, head) in others.items():
                lp = log_softmax(logits(states[i][t:t + TOKEN_CHUNK], head))
                s = stats[name]
                s["kl"].append(mx.maximum(mx.sum(ref_p * (ref_lp - lp), axis=-1), 0.0))
                s["top1"].append(mx.argmax(lp, axis=-1) == ref_top)
                s["nll"].append(-mx.take_along_axis(lp[:n_pred], tgt[:, None], axis=-1)[:, 0])
                outs += [s["kl"][-1], s["top1"][-1], s["nll"][-1]]
                mx.eval(outs)  # one model's log-probs alive at a time
    return ref_nll, stats


def _summary(s: dict[str, list], bpw: float) -> dict[str, float]:
    kl = kl_stats(s["kl"])
    return {"bpw": bpw, "mean_kl": kl.mean, "p99_kl": kl.p99,
            "top1": top1_from_matches(s["top1"]).rate, "ppl": perplexity_from_nll(s["nll"]).ppl}


def held_out_quality(
    source_path: Path,
    quant_path: Path,
    load_source: Callable[[Path], tuple[nn.Module, Any, dict]],
    quant_bpw: float,
    items: list[QuantItem],
    budget: BitBudget,
    *,
    n_tokens: int = 2048,
    progress: ProgressFn = no_progress,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Mean/p99 KL, top-1 and perplexity of the quant at ``quant_path`` and of uniform 4-bit,
    against the source at ``source_path`` (``load_source`` gives model, tokenizer, config)."""
    from mlx_lm import load

    progress(Progress("verify", 0, 3, "source"))
    src, tokenizer, src_cfg = load_source(source_path)
    bb = Backbone(src, src_cfg)
    bb.stream_blocks(source_path)
    seqs = heldout_tokens(tokenizer, max_tokens=n_tokens, seq_len=512)
    ref_states = _final_states(bb, seqs, None, lambda t: bb.embed.weight[t], cancel)
    progress(Progress("verify", 1, 3, "uniform 4-bit"))
    four = {i.path: 4 for i in items if i.quantizable}
    four_fn = choice_weight_fn(four, 64)
    # Groups never cross rows, so quantizing the looked-up rows equals looking up quantized rows.
    uni_states = _final_states(bb, seqs, four_fn,
                               lambda t: four_fn("model.embed_tokens", bb.embed.weight[t]), cancel)
    # Kept in the stored dtype: the only source weights the logits need, and uniform
    # 4-bit's version of them (what a QuantizedLinear/Embedding would compute with).
    head_w = bb.head_weight()
    head_uni = four_fn(bb.head_path, head_w)
    mx.eval(head_uni)
    vocab = head_w.shape[0]
    norm = bb.norm
    head_path = bb.head_path
    del bb, src
    gc.collect()
    mx.clear_cache()

    progress(Progress("verify", 2, 3, "this quant"))
    quant_model, _tok = load(str(quant_path))  # stock loader: proves the folder loads unaided
    # A weightless skeleton of the source's modules (lazy: never evaluated), run with
    # the quant's dequantized weights swapped in one block at a time.
    skeleton, _, skel_cfg = load(str(source_path), return_config=True, lazy=True)
    if any("scales" in m for _, m in skeleton.named_modules()):  # a --dequantize source
        from mlx_lm.utils import dequantize_model

        dequantize_model(skeleton)  # lazy as well: its weights are replaced, never computed
    qbb = Backbone(skeleton, skel_cfg)
    q_embed = get_module(quant_model, "model.embed_tokens")
    quant_states = _final_states(qbb, seqs, loaded_weight_fn(quant_model),
                                 lambda t: q_embed(t), cancel)
    del qbb, skeleton
    head_q = loaded_weight_fn(quant_model)(head_path, head_w)
    mx.eval(head_q)

    ref_nll, stats = _compare(
        norm, vocab, (ref_states, head_w),
        {"quant": (quant_states, head_q), "uniform4": (uni_states, head_uni)},
        seqs, cancel)
    progress(Progress("verify", 3, 3, "done"))
    return {
        "tokens": sum(len(s) for s in seqs),
        "source_ppl": perplexity_from_nll(ref_nll).ppl,
        "quant": _summary(stats["quant"], quant_bpw),
        "uniform4": _summary(stats["uniform4"], replace(budget, group_size=64).bpw(items, four)),
    }
