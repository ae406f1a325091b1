"""The memory planner's predicted peak against MLX's measured peak while generating.

For the demo model at each context (default 2,048 and 8,192 tokens), with and
without KV-cache bits: a fresh process loads the demo as the engine does
(engine/loader.py: float32 on a Linux CPU), prefills a prompt of the context's
length in the engine's chunks, generates 8 tokens greedily, and reports
``mx.get_peak_memory()``; the planner predicts the same peak from the config
and weight headers alone. Prints predicted / measured per case.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
        python benchmarks/bench_plan.py [--contexts 2048,8192] [--kv-bits 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GENERATED = 8


def measure(model_dir: str, context: int, kv_bits: int | None) -> dict:
    """One generation at ``context`` tokens in this process; MLX's peak and the KV bytes."""
    import mlx.core as mx
    import numpy as np
    from mlx_lm import stream_generate
    from mlx_lm.models.cache import make_prompt_cache
    from mlx_lm.sample_utils import make_sampler

    from optiq_tui.engine.loader import load
    from optiq_tui.engine.session import PREFILL_STEP

    loaded = load(model_dir)
    mx.clear_cache()
    mx.reset_peak_memory()
    prompt = mx.array(np.random.default_rng(0).integers(100, 40000, size=context - GENERATED),
                      dtype=mx.uint32)
    cache = make_prompt_cache(loaded.model)
    # quantized_kv_start=0: the cache is quantized from the first chunk, as planned.
    for _ in stream_generate(loaded.model, loaded.tokenizer, prompt, max_tokens=GENERATED,
                             sampler=make_sampler(0.0), prompt_cache=cache,
                             prefill_step_size=PREFILL_STEP, kv_bits=kv_bits, quantized_kv_start=0):
        pass
    return {"peak": mx.get_peak_memory(), "kv": sum(c.nbytes for c in cache),
            "weights": loaded.memory_bytes}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="2048,8192")
    parser.add_argument("--kv-bits", type=int, default=8)
    parser.add_argument("--one", nargs=3, metavar=("DIR", "CONTEXT", "KV_BITS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model_dir, context, kv = args.one
        print(json.dumps(measure(model_dir, int(context), None if kv == "none" else int(kv))))
        return 0

    from benchmarks.demo_model import demo_dir
    from optiq_tui.quant.plan import model_memory, predict_peak

    folder = demo_dir()
    mm = model_memory(folder)
    print(f"{'context':>7} {'kv':>4} {'predicted MB':>12} {'measured MB':>11} {'ratio':>6}"
          f" {'weights':>8} {'kv pred/meas':>13}")
    ratios = []
    for context in (int(c) for c in args.contexts.split(",")):
        for kv in (None, args.kv_bits):
            run = subprocess.run([sys.executable, __file__, "--one", str(folder), str(context),
                                  str(kv or "none")], capture_output=True, text=True, check=True)
            got = json.loads(run.stdout.strip().splitlines()[-1])
            pred = predict_peak(mm, mm.source_bpw, context, kv_bits=kv)
            ratio = pred.total / got["peak"]
            ratios.append(ratio)
            print(f"{context:>7} {kv or '-':>4} {pred.total / 1e6:>12.1f} {got['peak'] / 1e6:>11.1f} "
                  f"{ratio:>6.3f} {pred.weights / got['weights']:>8.3f} "
                  f"{pred.kv_cache / max(got['kv'], 1):>13.3f}", flush=True)
    worst = max(abs(r - 1) for r in ratios)
    print(f"worst |predicted/measured - 1| = {worst:.3f} (target <= 0.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
