"""The Fisher estimate against the exact method on every layer of the demo model.

Run with OpenBLAS preloaded (the CLI does this itself; a bare python does not):

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
        python benchmarks/bench_exact.py [--model PATH] [--exact-seqs 2] [--target 5.0]

In one run, on the same calibration text the quantizer uses:
- the Fisher pass (``fisher_scores``, one forward and backward per sequence), timed;
- the exact method: quantize one layer to 4 bits, rerun the model from that
  layer's block (hidden states cached at every block boundary), measure the
  mean KL to the source's logits; every quantizable layer, timed;
- Spearman rank correlation of the two over all layers, and their ratio;
- the optiq-4/8 knapsack at ``--target`` bpw from each, and the held-out
  quality of both allocations and of uniform 4-bit (text never used for
  calibration).
8-bit damage for the exact allocation is the exact 4-bit KL scaled by the
Fisher ratio KL(8)/KL(4) of the same layer (that ratio comes from the
weights' rounding errors; probing 8 bits too would double the exact time for
choices worth ~1/256 of the 4-bit ones). Saves JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from bench_quant import _spearman


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, default=None, help="source model folder (default: the demo model)")
    ap.add_argument("--exact-seqs", type=int, default=2, help="calibration sequences per exact probe")
    ap.add_argument("--target", type=float, default=5.0, help="bits per weight of both allocations")
    ap.add_argument("--heldout-tokens", type=int, default=2048)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    os.environ.setdefault("OPTIQ_HOME", tempfile.mkdtemp(prefix="bench-exact-"))

    import mlx.core as mx
    import numpy as np

    from optiq_tui.measures.metrics import kl_stats, perplexity_from_nll, top1_from_matches
    from optiq_tui.measures.texts import heldout_tokens
    from optiq_tui.quant.allocate import allocate
    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.calibration import build_calibration
    from optiq_tui.quant.config import QuantConfig
    from optiq_tui.quant.fisher import fisher_scores
    from optiq_tui.quant.layers import bit_budget, quant_items
    from optiq_tui.quant.pipeline import load_source
    from optiq_tui.quant.probes import Reference, choice_weight_fn, probe_item, reference_pass, run_probe

    if args.model is None:
        from demo_model import demo_dir

        args.model = demo_dir()
    model, tok, cfg = load_source(args.model, False)
    bb = Backbone(model, cfg)
    items = quant_items(model, 64, bb.tied)
    active = [i for i in items if i.quantizable]
    budget = bit_budget(model, items, 64)
    defaults = QuantConfig()
    cal = build_calibration(tok, n_sequences=defaults.n_calibration, seq_len=defaults.seq_len)
    report: dict = {"model": args.model.name, "layers": len(active), "calibration_tokens": cal.n_tokens,
                    "exact_seqs": args.exact_seqs, "load_average": os.getloadavg()}
    print(f"{args.model.name}: {len(active)} layers, {cal.n_tokens} calibration tokens", flush=True)

    t0 = time.perf_counter()
    fisher = fisher_scores(bb, items, cal.sequences, (4, 8), 64)
    report["fisher_seconds"] = round(time.perf_counter() - t0, 1)
    print(f"Fisher pass: {report['fisher_seconds']} s", flush=True)

    # Hidden states at every block boundary (stride 1): a probe reruns only the blocks from its own.
    t0 = time.perf_counter()
    coarse = reference_pass(bb, cal.sequences[: args.exact_seqs])
    hs = [coarse.checkpoints[i][0] for i in range(len(coarse.sequences))]
    every = [{} for _ in hs]
    for k in range(len(bb.blocks)):
        for cp, h in zip(every, hs):
            cp[k] = h
        hs = bb.forward_hidden(hs, start=k, stop=k + 1)
    ref = Reference(coarse.sequences, 1, every, coarse.final)
    exact: dict[str, float] = {}
    for n, item in enumerate(active, 1):
        exact[item.path] = probe_item(bb, ref, item.path, 4, 64, item.block)
        if n % 20 == 0 or n == len(active):
            spent = time.perf_counter() - t0
            print(f"  exact {n}/{len(active)}: {spent:.0f} s (~{spent / n * (len(active) - n):.0f} s left)", flush=True)
    report["exact_seconds"] = round(time.perf_counter() - t0, 1)
    # Per sequence, so the two methods compare at the quantizer's calibration size.
    exact_at_cal_size = report["exact_seconds"] / args.exact_seqs * len(cal.sequences)
    report["exact_seconds_at_calibration_size"] = round(exact_at_cal_size, 1)

    paths = [i.path for i in active]
    f4 = np.array([fisher[p][4] for p in paths])
    e4 = np.array([exact[p] for p in paths])
    report["spearman_4bit"] = _spearman(f4, e4)
    report["fisher_over_exact_median"] = float(np.median(f4 / np.maximum(e4, 1e-12)))
    report["per_layer"] = {p: {"fisher4": fisher[p][4], "fisher8": fisher[p][8], "exact4": exact[p]}
                           for p in paths}

    exact_scores = {p: {4: exact[p], 8: exact[p] * fisher[p][8] / max(fisher[p][4], 1e-30), 16: 0.0}
                    for p in paths}
    allocations = {
        "uniform 4-bit": {p: 4 for p in paths},
        f"Fisher optiq-4/8 @ {args.target}": allocate(items, fisher, budget, args.target, (4, 8)).choice,
        f"exact optiq-4/8 @ {args.target}": allocate(items, exact_scores, budget, args.target, (4, 8)).choice,
    }
    seqs = heldout_tokens(tok, max_tokens=args.heldout_tokens, seq_len=512)
    held = reference_pass(bb, seqs)
    rows = {}
    for label, choice in allocations.items():
        res = run_probe(bb, held, choice_weight_fn(choice, 64), -1, with_nll=True)
        kl = kl_stats(res.kl)
        rows[label] = {"bpw": budget.bpw(items, choice), "mean_kl": kl.mean, "p99_kl": kl.p99,
                       "ppl": perplexity_from_nll(res.nll).ppl, "top1": top1_from_matches(res.top1).rate,
                       "eight_bit_layers": sum(1 for b in choice.values() if b == 8)}
        mx.eval(res.kl)
    a, b = allocations[f"Fisher optiq-4/8 @ {args.target}"], allocations[f"exact optiq-4/8 @ {args.target}"]
    report["same_choice_layers"] = sum(1 for p in paths if a[p] == b[p])
    report["rows"] = rows

    print(f"Spearman (4-bit KL, all {len(paths)} layers): {report['spearman_4bit']:.3f}; "
          f"Fisher/exact median {report['fisher_over_exact_median']:.2f}")
    print(f"time: Fisher pass {report['fisher_seconds']} s on {len(cal.sequences)} sequences; exact 4-bit "
          f"sweep {report['exact_seconds']} s on {args.exact_seqs} (= {exact_at_cal_size:.0f} s at "
          f"{len(cal.sequences)}; {exact_at_cal_size / report['fisher_seconds']:.0f}x the Fisher pass)")
    print(f"allocations agree on {report['same_choice_layers']}/{len(paths)} layers; held-out "
          f"({held.n_tokens} tokens):")
    for label, r in rows.items():
        print(f"  {label:>26}: {r['bpw']:.3f} bpw  KL {r['mean_kl']:.4f}  p99 {r['p99_kl']:.3f}  "
              f"ppl {r['ppl']:.2f}  top-1 {100 * r['top1']:.1f}%  ({r['eight_bit_layers']} at 8 bits)")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"bench_exact_{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
