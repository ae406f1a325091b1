"""Quantizer benchmark on the demo model: speed, quality against baselines, memory.

Run with OpenBLAS preloaded (the CLI does this itself; a bare python does not):

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
        python benchmarks/bench_quant.py [--model PATH] [--heldout-tokens 2048]

It measures, in one run on one machine:
- the wall time of `quantize` (optiq-4/8 at 5.0 bpw, verify included) and of a
  second quant of the same source at another budget (sensitivity cache);
- the Fisher screen's time against the exact method's measurement time: exact
  single-layer KL probes are timed on a sample of layers and extrapolated to
  all layers and widths (stated as an extrapolation);
- the rank correlation of the Fisher estimate with exact KL on those layers;
- held-out mean KL / p99 KL / perplexity / top-1 of uniform 4- and 5-bit,
  mlx-lm's mixed_3_6 and mixed_4_6 recipes, and optiq-4/8 and optiq-best at
  4.5..6.0 bpw (the allocations the pipeline makes, evaluated by
  quantize-dequantize in float32, the same values the written models hold);
- peak MLX memory of the quantize against the source size.
Prints a table and saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path



def _spearman(a, b) -> float:
    import numpy as np

    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None, help="source model folder (default: the demo model)")
    ap.add_argument("--heldout-tokens", type=int, default=2048)
    ap.add_argument("--exact-layers", type=int, default=8, help="layers timed with exact probes")
    ap.add_argument("--exact-seqs", type=int, default=4, help="calibration sequences per exact probe")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    os.environ.setdefault("OPTIQ_HOME", tempfile.mkdtemp(prefix="bench-quant-"))

    from mlx_lm.convert import mixed_quant_predicate_builder

    from optiq_tui.engine.blas import loaded_blas
    from optiq_tui.measures.metrics import kl_stats, perplexity_from_nll, top1_from_matches
    from optiq_tui.measures.texts import heldout_tokens
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.progress import Progress
    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.calibration import build_calibration
    from optiq_tui.quant.config import QuantConfig
    from optiq_tui.quant.layers import bit_budget, get_module, quant_items
    from optiq_tui.quant.measure import measure_and_allocate
    from optiq_tui.quant.pipeline import _Stages, load_source, quantize
    from optiq_tui.quant.probes import choice_weight_fn, probe_item, reference_nll, reference_pass, run_probe

    if args.model is None:
        from demo_model import demo_dir

        args.model = demo_dir()
    info = inspect_model(args.model)
    report: dict = {"model": info.name, "source_bytes": info.size_bytes, "blas": loaded_blas(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()}
    print(f"{info.name}: {info.size_bytes / 1e6:.0f} MB, BLAS: {report['blas']}, "
          f"load average {report['load_average'][0]:.1f}", flush=True)

    # 1. The headline quantize, timed end to end (verify included), with its Fisher screen time.
    fisher_time = {}

    def progress(event):
        if isinstance(event, Progress) and event.stage == "measure" and event.unit == "steps":
            fisher_time.setdefault("start", time.perf_counter())
            fisher_time["end"] = time.perf_counter()

    t0 = time.perf_counter()
    main_q = quantize(info, QuantConfig.from_preset("optiq-4/8", target_bpw=5.0), progress=progress)
    report["quantize_seconds"] = round(time.perf_counter() - t0, 1)
    report["quantize_timings"] = main_q.timings
    report["quantize_quality"] = main_q.quality
    report["quantize_bpw"] = main_q.achieved_bpw
    report["peak_memory_bytes"] = main_q.peak_memory_bytes
    print(f"quantize optiq-4/8 @ 5.0: {report['quantize_seconds']} s {main_q.timings}", flush=True)
    t0 = time.perf_counter()
    second = quantize(info, QuantConfig.from_preset("optiq-4/8", target_bpw=5.5, verify=False))
    report["second_quantize_seconds"] = round(time.perf_counter() - t0, 1)
    report["second_cache_hit"] = second.cache_hit
    print(f"second quant @ 5.5 (cache hit {second.cache_hit}): {report['second_quantize_seconds']} s", flush=True)

    model, tok, cfg = load_source(args.model, False)
    bb = Backbone(model, cfg)
    items = quant_items(model, 64, bb.tied)
    budget = bit_budget(model, items, 64)
    active = [i for i in items if i.quantizable]

    # 2. Allocations: baselines and both presets along the curve (from the cache: seconds).
    allocations: dict[str, dict[str, int]] = {}
    for bits in (4, 5):
        allocations[f"uniform {bits}-bit"] = {i.path: bits for i in active}
    for recipe in ("mixed_3_6", "mixed_4_6"):
        pred = mixed_quant_predicate_builder(recipe, model, 64)
        allocations[f"mlx-lm {recipe}"] = {i.path: pred(i.path, get_module(model, i.path))["bits"]
                                          for i in active}
    for preset in ("optiq-4/8", "optiq-best"):
        for target in (4.5, 4.75, 5.0, 5.5, 6.0):
            cfg_q = QuantConfig.from_preset(preset, target_bpw=target)
            t0 = time.perf_counter()
            try:
                choice, scores, _meta, hit = measure_and_allocate(
                    info, cfg_q, bb, tok, items, budget, _Stages(lambda e: None),
                    progress=lambda e: None, cancel=None)
            except Exception as exc:  # noqa: BLE001 - a budget a preset cannot meet is reported
                print(f"{preset} @ {target}: {exc}", flush=True)
                continue
            allocations[f"{preset} @ {target}"] = choice
            print(f"allocated {preset} @ {target} in {time.perf_counter() - t0:.1f} s (cache {hit})", flush=True)

    # 3. Held-out quality of every allocation (quantize-dequantize in float32).
    seqs = heldout_tokens(tok, max_tokens=args.heldout_tokens, seq_len=512)
    ref = reference_pass(bb, seqs)
    report["heldout_tokens"] = ref.n_tokens
    report["source_ppl"] = perplexity_from_nll(reference_nll(bb, ref)).ppl
    rows = {}
    for label, choice in allocations.items():
        res = run_probe(bb, ref, choice_weight_fn(choice, 64), -1, with_nll=True)
        kl = kl_stats(res.kl)
        rows[label] = {"bpw": budget.bpw(items, choice), "mean_kl": kl.mean, "p99_kl": kl.p99,
                       "ppl": perplexity_from_nll(res.nll).ppl, "top1": top1_from_matches(res.top1).rate,
                       "histogram": {str(b): list(choice.values()).count(b) for b in sorted(set(choice.values()))}}
        r = rows[label]
        print(f"{label:>22}: {r['bpw']:.3f} bpw  KL {r['mean_kl']:.4f}  p99 {r['p99_kl']:.3f}  "
              f"ppl {r['ppl']:.2f}  top-1 {100 * r['top1']:.1f}%", flush=True)
    report["rows"] = rows

    # 4. Exact method: time single-layer probes on sampled layers; compare rankings.
    cal = build_calibration(tok, n_sequences=8)
    cal_ref = reference_pass(bb, cal.sequences[: args.exact_seqs])
    rng = random.Random(0)
    sample = rng.sample([i for i in active if i.kind == "linear"], args.exact_layers - 1)
    sample.append(next(i for i in active if i.path == "model.embed_tokens"))
    from optiq_tui.quant.cache import load_scores

    record = load_scores(main_q_key(main_q))
    est, exact, times = [], [], []
    for item in sample:
        t0 = time.perf_counter()
        exact.append(probe_item(bb, cal_ref, item.path, 4, 64, item.block))
        times.append(time.perf_counter() - t0)
        est.append(record["scores"][item.path][4])
    per_probe_per_seq = sum(times) / len(times) / args.exact_seqs
    n_seqs = len(cal.sequences)
    exact_4bit_sweep = per_probe_per_seq * len(active) * n_seqs
    fisher_seconds = main_q.timings.get("measure", 0.0)
    report["exact"] = {
        "sampled_layers": [i.path for i in sample], "fisher_kl": est, "exact_kl": exact,
        "spearman": _spearman(est, exact), "probe_seconds": times,
        "extrapolated_seconds_one_width": exact_4bit_sweep,
        "extrapolated_seconds_optiq_4_8": exact_4bit_sweep,  # 8 bits ~ 0: one width to measure
        "extrapolated_seconds_optiq_best": exact_4bit_sweep * 5,
        "fisher_measure_seconds": fisher_seconds,
        "fisher_pass_seconds": round(fisher_time.get("end", 0) - fisher_time.get("start", 0), 1),
    }
    print(f"exact probes: Spearman {report['exact']['spearman']:.3f} on {len(sample)} layers; "
          f"exact 4-bit sweep of {len(active)} layers x {n_seqs} sequences ~ {exact_4bit_sweep:.0f} s "
          f"(extrapolated) vs measure stage {fisher_seconds:.0f} s", flush=True)

    u4 = rows["uniform 4-bit"]["mean_kl"]
    summary = {
        "optiq-4/8@5.0 / uniform4": rows.get("optiq-4/8 @ 5.0", {}).get("mean_kl", float("nan")) / u4,
        "optiq-best@5.0 / uniform4": rows.get("optiq-best @ 5.0", {}).get("mean_kl", float("nan")) / u4,
        "mixed_4_6 / uniform4": rows["mlx-lm mixed_4_6"]["mean_kl"] / u4,
        "exact / fisher time": exact_4bit_sweep / max(fisher_seconds, 1e-9),
        "peak memory / source size": main_q.peak_memory_bytes / info.size_bytes,
    }
    report["summary"] = summary
    print(json.dumps(summary, indent=2))
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"bench_quant_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"saved {out}")
    return 0


def main_q_key(result) -> str:
    meta = json.loads((result.path / "optiq_quant.json").read_text())
    return meta["calibration"]["cache_key"]


if __name__ == "__main__":
    sys.exit(main())
