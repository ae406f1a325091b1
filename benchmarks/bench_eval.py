"""Quick eval on the demo model and two quants of it, checked against plain mlx-lm.

Makes a uniform 4-bit quant (mlx_lm.convert) and an OptiQ 5.0-bpw quant
(optiq_tui.quant.pipeline) of SmolLM2-135M-Instruct, runs
``optiq_tui.eval.quality.evaluate`` and prints the table; then recomputes
mean/p99 KL, top-1 agreement and perplexity independently (mlx_lm.load and
plain mx ops in this file) and prints the differences.

Run with OpenBLAS preloaded (float32 on CPU is ~30x faster):
  LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \
    python benchmarks/bench_eval.py [--no-retrieval] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from demo_model import demo_dir


def make_quants(src_info, work: Path) -> list:
    """[uniform 4-bit, OptiQ 5.0] ModelInfos (OptiQ left out, with a note, if the pipeline fails)."""
    from mlx_lm import convert

    from optiq_tui.library.catalog import inspect_model

    out = []
    q4 = work / "SmolLM2-135M-Instruct-4bit-g64"
    if not q4.exists():
        t = time.perf_counter()
        convert(str(src_info.path), str(q4), quantize=True, q_bits=4, q_group_size=64)
        print(f"uniform 4-bit (mlx_lm.convert): {time.perf_counter() - t:.1f} s", file=sys.stderr)
    out.append(inspect_model(q4))

    from optiq_tui.quant.config import QuantConfig
    from optiq_tui.quant.pipeline import default_name, quantize
    from optiq_tui.settings import paths

    config = QuantConfig(target_bpw=5.0)
    existing = paths().models / default_name(src_info.name, config)
    try:
        if existing.exists():
            out.append(inspect_model(existing))
        else:
            t = time.perf_counter()
            result = quantize(src_info, config)
            print(f"OptiQ 5.0 (optiq_tui pipeline): {time.perf_counter() - t:.1f} s", file=sys.stderr)
            out.append(inspect_model(result.path))
    except Exception as exc:  # noqa: BLE001 - the bench reports what it could measure
        print(f"OptiQ quant failed, evaluating without it: {type(exc).__name__}: {exc}", file=sys.stderr)
    return out


def independent(paths_: list[Path], sequences: list[list[int]]) -> dict[str, dict[str, float]]:
    """Mean/p99 KL, top-1 and ppl with mlx_lm.load + plain mx ops; first path is the reference."""
    import mlx.core as mx
    import mlx.nn as nn
    import numpy as np
    from mlx_lm import load
    from mlx_lm.utils import dequantize_model

    def float32_model(path: Path):
        model, _tok = load(str(path))
        model.set_dtype(mx.float32)  # scales/biases first, so dequantized weights stay exact
        dequantize_model(model)
        model.set_dtype(mx.float32)
        return model

    ref_model = float32_model(paths_[0])
    ref = []
    for seq in sequences:
        logits = ref_model(mx.array(seq[:-1])[None])[0].astype(mx.float32)
        mx.eval(logits)
        ref.append(logits)
    del ref_model
    results = {}
    for path in paths_:
        model = float32_model(path)
        kls, agree, losses = [], 0, []
        for seq, r in zip(sequences, ref):
            logits = model(mx.array(seq[:-1])[None])[0].astype(mx.float32)
            p = mx.softmax(r, axis=-1)
            kl = mx.sum(p * (nn.log_softmax(r, axis=-1) - nn.log_softmax(logits, axis=-1)), axis=-1)
            agree += int(mx.sum(mx.argmax(r, axis=-1) == mx.argmax(logits, axis=-1)).item())
            losses.append(np.array(nn.losses.cross_entropy(logits, mx.array(seq[1:]), reduction="none")))
            kls.append(np.array(kl))
        k = np.concatenate(kls)
        loss = np.concatenate(losses)
        results[str(path)] = {
            "mean_kl": float(k.mean()),
            "p99_kl": float(np.percentile(k, 99)),
            "top1": agree / k.size,
            "ppl": float(np.exp(loss.mean())),
        }
        del model
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-retrieval", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="folder for the quants and OPTIQ_HOME (reused)")
    args = parser.parse_args()
    demo = demo_dir()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-eval."))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["OPTIQ_HOME"] = str(work / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from optiq_tui.engine.blas import loaded_blas
    from optiq_tui.eval.quality import evaluate
    from optiq_tui.library.provenance import find_reference
    from optiq_tui.eval.reports import save_report, to_markdown
    from optiq_tui.measures.texts import heldout_tokens
    from optiq_tui.library.catalog import inspect_model

    print(f"BLAS: {loaded_blas()}", file=sys.stderr)
    src = inspect_model(demo)
    quants = make_quants(src, work)
    print(f"reference found from provenance: {getattr(find_reference(quants), 'name', None)}", file=sys.stderr)

    t = time.perf_counter()
    report = evaluate(quants, src, retrieval=not args.no_retrieval, trials=1)
    eval_s = time.perf_counter() - t
    print(to_markdown(report))
    print(f"evaluate(): {eval_s:.1f} s for {len(report.rows)} models; saved {save_report(report)}")

    from mlx_lm.utils import load_tokenizer

    sequences = heldout_tokens(load_tokenizer(demo), report.settings.max_tokens, report.settings.seq_len)
    t = time.perf_counter()
    check = independent([Path(r.path) for r in report.rows], sequences)
    print(f"independent mlx-lm computation: {time.perf_counter() - t:.1f} s")
    print()
    print("| model | metric | optiq_tui.eval | plain mlx-lm | abs diff |")
    print("|---|---|---:|---:|---:|")
    worst = 0.0
    for row in report.rows:
        ind = check[row.path]
        for metric in ("mean_kl", "p99_kl", "top1", "ppl"):
            ours = getattr(row, metric)
            diff = abs(ours - ind[metric])
            scale = max(abs(ind[metric]), 1e-3)
            worst = max(worst, diff / scale)
            print(f"| {row.name} | {metric} | {ours:.6f} | {ind[metric]:.6f} | {diff:.2e} |")
    print()
    print(f"largest relative difference: {worst:.2e} (figures are shown to 4 decimals)")
    by_name = {r.name: r for r in report.rows}
    names = [q.name for q in quants]
    if len(names) == 2:
        u, o = by_name[names[0]], by_name[names[1]]
        print(
            f"OptiQ vs uniform 4-bit: mean KL {o.mean_kl:.4f} vs {u.mean_kl:.4f}, "
            f"top-1 {100 * o.top1:.1f}% vs {100 * u.top1:.1f}% "
            f"(bpw {o.bpw:.2f} vs {u.bpw:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
