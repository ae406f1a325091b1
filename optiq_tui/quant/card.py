"""The model card (README.md) of an OptiQ quant."""

from __future__ import annotations

from collections import Counter
from typing import Any

from optiq_tui.measures.flips import Flips
from optiq_tui.measures.metrics import KLInterval
from optiq_tui.measures.receipts import receipts_line
from optiq_tui.quant.config import width_text


def _quality_rows(quality: dict[str, Any] | None) -> list[str]:
    if not quality:
        return ["Quality was not measured (verify skipped)."]
    rows = [
        f"Measured on {quality['tokens']} held-out tokens (never calibration text), against the source "
        f"(perplexity {quality['source_ppl']:.2f}); KL is KL(source || quant) per token in nats.",
        "",
        "| model | bpw | mean KL | KL 95% CI | p99 KL | top-1 agreement | perplexity | ppl ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, label in (("quant", "this quant"), ("uniform4", "uniform 4-bit g64 of the same weights")):
        q = quality.get(key)
        if q:
            rows.append(f"| {label} | {q['bpw']:.3f} | {q['mean_kl']:.4f} | {_ci(q)} | {q['p99_kl']:.3f} | "
                        f"{100 * q['top1']:.1f}% | {q['ppl']:.2f} | {_ratio(q)} |")
    line = _receipts(quality.get("quant"))
    return rows + (["", line] if line else [])


def _ci(q: dict[str, Any]) -> str:
    low, high = q.get("kl_low"), q.get("kl_high")  # absent in records made before receipts
    return "—" if low is None or high is None else f"{low:.4f}–{high:.4f}"


def _ratio(q: dict[str, Any]) -> str:
    return "—" if q.get("ppl_ratio") is None else f"{q['ppl_ratio']:.3f}"


def _receipts(q: dict[str, Any] | None) -> str | None:
    """The receipts line: mean KL with its interval, and flips when verify made them."""
    if not q or "kl_sequences" not in q:
        return None
    interval = KLInterval(q["mean_kl"], _nan(q.get("kl_low")), _nan(q.get("kl_high")), q["kl_sequences"])
    f = q.get("flips")
    flips = Flips(**{k: tuple(v) for k, v in f.items()}) if f else None
    line = receipts_line("Receipts for this quant", interval, flips)
    if flips is not None and flips.changed:
        line += " Changed: " + "; ".join(
            f"“{flips.prompts[i]}” → “{_short(flips.answers[i])}” (source: “{_short(flips.source_answers[i])}”)"
            for i in flips.changed) + "."
    return line


def _nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _short(answer: str) -> str:
    text = " ".join(answer.split())
    return text[:60] + ("…" if len(text) > 60 else "")


def model_card(meta: dict[str, Any], items: list[dict[str, Any]]) -> str:
    """Markdown from the ``optiq_quant.json`` record and the per-layer rows."""
    hist = Counter(r["bits"] for r in items)
    uniform = meta["method"] == "uniform"
    lines = [
        f"# {meta['name']}",
        "",
        f"Quantized from `{meta['source_model']}` by optiq-tui. Loads with stock `mlx_lm.load`.",
        "",
        "## Method",
        "",
    ]
    if uniform:
        lines.append(f"Uniform {meta['uniform_bits']}-bit affine quantization, group size {meta['group_size']}.")
    else:
        lines += [
            f"OptiQ mixed precision, preset `{meta['preset']}`, candidate widths "
            f"{', '.join(width_text(b) for b in meta['widths'])}, group size {meta['group_size']} "
            "(affine, float16 scales and biases)"
            + (f"; {len(meta['layer_groups'])} layers at another group size (a group's scale and "
               "bias cost 32 bits: g32 adds 1.0 bit per weight, g64 0.5, g128 0.25)."
               if meta.get("layer_groups") else "."),
            "",
            "- Sensitivity: diagonal Fisher information from per-sequence gradients with labels sampled "
            f"from the model itself, on {meta['calibration']['tokens']} calibration tokens "
            f"({meta['calibration']['source']}); the KL of each layer at each width is estimated as "
            "0.5 * sum(F * (W - dequant(quant(W)))^2) with the same quantizer that wrote these weights.",
            "- Exact single-layer KL probes replace the estimate for the embedding / lm_head and guard "
            "the largest and lowest-width choices.",
            "- Allocation: per-layer lower convex hull and greedy KL-per-bit under the budget, counting "
            "bits as mlx-lm does (packed weights + scales + biases; norms, embedding and every layer "
            "inside the budget).",
        ]
    if meta.get("refine"):
        from optiq_tui.measures.receipts import refine_line

        lines += ["", "- Refinement (DWQ-style): scales and biases tuned against the source's logits on "
                  "the calibration text; " + refine_line(meta["refine"]) + "."]
    lines += [
        "",
        f"Target: {meta['target_bpw']} bits per weight; achieved: **{meta['achieved_bpw']:.3f}** "
        "(mlx-lm's compute_bits_per_weight).",
        "",
        "Widths: " + ", ".join(f"{width_text(b)}: {n} layers" for b, n in sorted(hist.items())),
        "",
        "## Quality",
        "",
        *_quality_rows(meta.get("quality")),
        "",
        "## Layers",
        "",
        "| layer | shape | bits | est. KL at chosen | est. KL at 4 bits |",
        "|---|---|---|---|---|",
    ]
    for r in items:
        kl = r.get("kl_by_bits") or {}
        chosen = kl.get(r["bits"])
        at4 = kl.get(4)
        lines.append(
            f"| {r['path']} | {'x'.join(map(str, r['shape']))} | {width_text(r['bits'])} | "
            f"{'' if chosen is None else f'{chosen:.2e}'} | {'' if at4 is None else f'{at4:.2e}'} |"
        )
    unq = [r for r in items if r.get("note")]
    if unq:
        lines += ["", "Kept unquantized: " + "; ".join(f"{r['path']} ({r['note']})" for r in unq)]
    lines += [
        "",
        "## Larger models",
        "",
        "Every pass of the measurement runs block by block, reading a block's weights from disk "
        "when it is reached and freeing them after, with one block's float32 weights and Fisher "
        "sums at a time; that is how a model larger than memory is measured.",
        "",
    ]
    return "\n".join(lines)
