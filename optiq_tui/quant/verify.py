"""Held-out quality of a written quant, loaded back with stock mlx_lm.load.

The written weights are dequantized block by block and run in float32 (the
same values QuantizedLinear computes with; float32 matmuls are far faster
than quantized ones on a CPU), next to the source and a uniform 4-bit g64
quantize-dequantize of the same source weights.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from optiq_tui.eval.metrics import kl_stats, perplexity_from_nll, top1_from_matches
from optiq_tui.eval.texts import heldout_tokens
from optiq_tui.progress import Progress, ProgressFn, no_progress
from optiq_tui.quant.backbone import Backbone, WeightFn
from optiq_tui.quant.layers import BitBudget, QuantItem, dequantize_rows, get_module
from optiq_tui.quant.probes import Reference, choice_weight_fn, reference_nll, reference_pass, run_probe


def loaded_weight_fn(model: nn.Module) -> WeightFn:
    """The weights of a loaded (quantized) model, dequantized to their stored dtype."""
    def fn(path: str, w: mx.array) -> mx.array:
        m = get_module(model, path)
        if "scales" in m:
            return dequantize_rows(m.weight, m.scales, m.get("biases"), m.group_size, m.bits, m.mode)
        return m.weight
    return fn


def summarize(bb: Backbone, ref: Reference, weight_fn: WeightFn, bpw: float,
              cancel: threading.Event | None) -> dict[str, float]:
    res = run_probe(bb, ref, weight_fn, -1, cancel, with_nll=True)
    kl = kl_stats(res.kl)
    return {"bpw": bpw, "mean_kl": kl.mean, "p99_kl": kl.p99,
            "top1": top1_from_matches(res.top1).rate, "ppl": perplexity_from_nll(res.nll).ppl}


def held_out_quality(
    bb: Backbone,
    tokenizer: Any,
    quant_model: nn.Module,
    quant_bpw: float,
    items: list[QuantItem],
    budget: BitBudget,
    *,
    n_tokens: int = 2048,
    progress: ProgressFn = no_progress,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    """Mean/p99 KL, top-1 and perplexity of the quant and of uniform 4-bit, against ``bb``'s source."""
    seqs = heldout_tokens(tokenizer, max_tokens=n_tokens, seq_len=512)
    progress(Progress("verify", 0, 3, "reference"))
    ref = reference_pass(bb, seqs, cancel)
    source_ppl = perplexity_from_nll(reference_nll(bb, ref)).ppl
    progress(Progress("verify", 1, 3, "this quant"))
    quant = summarize(bb, ref, loaded_weight_fn(quant_model), quant_bpw, cancel)
    progress(Progress("verify", 2, 3, "uniform 4-bit"))
    four = {i.path: 4 for i in items if i.quantizable}
    uniform = summarize(bb, ref, choice_weight_fn(four, 64),
                        replace(budget, group_size=64).bpw(items, four), cancel)
    progress(Progress("verify", 3, 3, "done"))
    return {"tokens": ref.n_tokens, "source_ppl": source_ppl, "quant": quant, "uniform4": uniform}
