"""Exact KL of quantized weights against the source, on a few cached sequences.

Used where the quadratic (Fisher) estimate is known to fail (embedding and
lm_head, widths of 3 bits or fewer, the largest predicted damages), to gate
low widths on held-back calibration tokens, and by the benchmark. A probe
changes some weights, reruns the blocks from the checkpoint entering the
first changed block, and compares the logits with the reference's.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

import mlx.core as mx

from optiq_tui.measures.metrics import log_softmax, token_kl, token_nll, top1_matches
from optiq_tui.progress import check_cancel
from optiq_tui.quant.backbone import Backbone, WeightFn
from optiq_tui.quant.config import KEEP, group_of
from optiq_tui.quant.layers import qdq


@dataclass
class Reference:
    """The source model's hidden states for some token sequences."""

    sequences: list[list[int]]
    stride: int
    checkpoints: list[dict[int, mx.array]]  # per sequence: block -> hidden state entering it
    final: list[mx.array]  # per sequence: hidden state after the last block

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def checkpoint_stride(n_blocks: int) -> int:
    """Blocks between cached hidden states: sqrt(n) keeps both the states held and the
    blocks a pass must rerun from the nearest one at about sqrt(n)."""
    return max(1, int(math.ceil(math.sqrt(n_blocks))))


def reference_pass(bb: Backbone, sequences: list[list[int]],
                   cancel: threading.Event | None = None,
                   on_segment: Callable[[int], None] | None = None) -> Reference:
    """The source's hidden states, checkpointed every ``checkpoint_stride`` blocks;
    ``on_segment(start)`` after each run of blocks (for progress)."""
    n = len(bb.blocks)
    stride = checkpoint_stride(n)
    hs = [bb.embed(seq) for seq in sequences]
    cps: list[dict[int, mx.array]] = [{} for _ in sequences]
    for start in range(0, n, stride):
        check_cancel(cancel)
        mx.eval(hs)
        for cp, h in zip(cps, hs):
            cp[start] = h
        hs = bb.forward_hidden(hs, start=start, stop=min(n, start + stride))
        if on_segment is not None:
            on_segment(start)
    return Reference(sequences, stride, cps, hs)


@dataclass
class ProbeResult:
    """Per-token KL to the reference, top-1 agreement, and NLL of the true next tokens."""

    kl: mx.array
    top1: mx.array
    nll: mx.array


def run_probe(bb: Backbone, ref: Reference, weight_fn: WeightFn | None, first_block: int,
              cancel: threading.Event | None = None, with_nll: bool = False) -> ProbeResult:
    """Forward with ``weight_fn`` from ``first_block`` (-1: from the embedding; len(blocks):
    head only) and compare with the reference."""
    n = len(bb.blocks)
    check_cancel(cancel)
    outside = bb.outside_weights(weight_fn)  # transformed once, not for every logits chunk
    if first_block >= n:
        hs = list(ref.final)
    elif first_block < 0:
        hs = bb.forward_hidden([bb.embed(s, outside) for s in ref.sequences], weight_fn)
    else:
        start = (first_block // ref.stride) * ref.stride
        hs = bb.forward_hidden([cp[start] for cp in ref.checkpoints], weight_fn, start=start)
    check_cancel(cancel)
    kls, tops, nlls = [], [], []
    for i, seq in enumerate(ref.sequences):
        targets = mx.array(seq[1:] + [seq[-1]])
        pos = 0
        for ref_logits, logits in zip(bb.logits_chunks(ref.final[i]),
                                      bb.logits_chunks(hs[i], outside)):
            kls.append(token_kl(ref_logits, logits))
            tops.append(top1_matches(ref_logits, logits))
            if with_nll:
                nlls.append(token_nll(logits, targets[pos:pos + logits.shape[0]]))
            pos += logits.shape[0]
            mx.eval(kls[-1], tops[-1], *nlls[-1:])
    nll = _drop_last(nlls, ref) if with_nll else mx.array([])
    return ProbeResult(mx.concatenate(kls), mx.concatenate(tops), nll)


def _drop_last(nlls: list[mx.array], ref: Reference) -> mx.array:
    """Concatenate per-position NLLs, without each sequence's last position (no true next token)."""
    flat = mx.concatenate(nlls)
    ends, pos = set(), 0
    for seq in ref.sequences:
        pos += len(seq)
        ends.add(pos - 1)
    return flat[mx.array([i for i in range(flat.size) if i not in ends])]


def choice_weight_fn(choice: dict[str, int], group_size: int) -> WeightFn:
    """Weights as the allocation ``choice`` (path -> width; a config.Width at its own group,
    else ``group_size``) would write them."""
    def fn(path: str, w: mx.array) -> mx.array:
        bits = choice.get(path, KEEP)
        return w if bits == KEEP else qdq(w, int(bits), group_of(bits, group_size))
    return fn


def first_block_of(paths: list[str], bb: Backbone, blocks: dict[str, int]) -> int:
    """Where a probe changing ``paths`` must start running."""
    n = len(bb.blocks)
    starts = []
    for p in paths:
        if p in bb.embed_paths:
            starts.append(-1)
        elif blocks.get(p, -1) >= 0:
            starts.append(blocks[p])
        else:
            starts.append(n)  # the head: only the tail reruns
    return min(starts) if starts else n


def probe_item(bb: Backbone, ref: Reference, path: str, bits: int, group_size: int,
               block: int, cancel: threading.Event | None = None) -> float:
    """Exact mean KL per token of quantizing only ``path`` to ``bits``."""
    start = first_block_of([path], bb, {path: block})
    res = run_probe(bb, ref, choice_weight_fn({path: bits}, group_size), start, cancel)
    return mx.mean(res.kl).item()


def reference_nll(bb: Backbone, ref: Reference) -> mx.array:
    """The reference's own NLL of the true next tokens (its perplexity)."""
    nlls = []
    for i, seq in enumerate(ref.sequences):
        targets = mx.array(seq[1:] + [seq[-1]])
        pos = 0
        for logits in bb.logits_chunks(ref.final[i]):
            lp = log_softmax(logits)
            t = targets[pos:pos + logits.shape[0]]
            nlls.append(-mx.take_along_axis(lp, t[:, None], axis=-1)[:, 0])
            pos += logits.shape[0]
    return _drop_last(nlls, ref)
