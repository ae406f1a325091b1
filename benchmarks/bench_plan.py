"""The memory planner's predicted peak against MLX's measured peak while generating.

For the demo model at each context (default 2,048 and 8,192 tokens), with and
without KV-cache bits: a fresh process loads the demo as the engine does
(engine/loader.py: float32 on a Linux CPU), prefills a prompt of the context's
length in the engine's chunks, generates 8 tokens greedily, and reports
``mx.get_peak_memory()``; the planner predicts the same peak from the config
and weight headers alone. Prints predicted / measured per case.

``--fill-cache``: the chunks before the last one are not run through the model;
the cache gets random keys and values of their shapes through the same calls
(``update_and_fetch`` chunk by chunk, quantized after the first chunk as
``stream_generate`` does), so its buffers grow exactly as in a full prefill; the
last chunk and the generated tokens run the model as the engine does. Memory
depends on shapes only, and the peak is at the last chunk (the largest cache and
attention scores), so the peak is the full run's (checked against full runs at
2,048 and 4,096 tokens), at a fraction of the time: mlx's CPU quantized matmul
(``transpose=True``, the scores of quantized attention) runs at about 1 GFLOP/s
here, so a full prefill of 8,192 tokens with 8-bit KV takes over half an hour.

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
        python benchmarks/bench_plan.py [--contexts 2048,8192] [--kv-bits 8] [--fill-cache]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GENERATED = 8


def _fill(model, cache: list, tokens: int, dtype, kv_bits: int | None) -> None:
    """The cache as prefilling ``tokens`` in the engine's chunks leaves it, from random keys
    and values: the attention's own cache calls, chunk by chunk, evaluated and quantized
    after each chunk as mlx-lm's generate_step does (quantized_kv_start=0)."""
    import mlx.core as mx
    from mlx_lm.generate import maybe_quantize_kv_cache

    from optiq_tui.engine.session import PREFILL_STEP

    for start in range(0, tokens, PREFILL_STEP):
        n = min(PREFILL_STEP, tokens - start)
        for c, layer in zip(cache, model.layers):
            attn = layer.self_attn
            kv = mx.random.normal((1, attn.n_kv_heads, n, attn.head_dim), dtype=dtype)
            c.update_and_fetch(kv, kv)
        maybe_quantize_kv_cache(cache, 0, 64, kv_bits)
        mx.eval([c.state for c in cache])
        mx.clear_cache()


def measure(model_dir: str, context: int, kv_bits: int | None, fill: bool = False) -> dict:
    """One generation at ``context`` tokens in this process; MLX's peak and the KV bytes.
    ``fill``: all chunks but the last filled into the cache without running the model."""
    import time

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
    t0 = time.perf_counter()
    prompt = mx.array(np.random.default_rng(0).integers(100, 40000, size=context - GENERATED),
                      dtype=mx.uint32)
    cache = make_prompt_cache(loaded.model)
    # stream_generate runs chunks of PREFILL_STEP while more than one token is left, so
    # filling whole chunks up to two tokens short of the prompt leaves it the same last chunk.
    filled = PREFILL_STEP * ((prompt.size - 2) // PREFILL_STEP) if fill else 0
    if filled:
        _fill(loaded.model, cache, filled, loaded.model.model.embed_tokens.weight.dtype, kv_bits)
    # quantized_kv_start=0: the cache is quantized from the first chunk, as planned.
    for _ in stream_generate(loaded.model, loaded.tokenizer, prompt[filled:], max_tokens=GENERATED,
                             sampler=make_sampler(0.0), prompt_cache=cache,
                             prefill_step_size=PREFILL_STEP, kv_bits=kv_bits, quantized_kv_start=0):
        pass
    return {"peak": mx.get_peak_memory(), "kv": sum(c.nbytes for c in cache),
            "weights": loaded.memory_bytes, "seconds": round(time.perf_counter() - t0, 1),
            "tokens": sum(c.offset for c in cache) // len(cache)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contexts", default="2048,8192")
    parser.add_argument("--kv-bits", type=int, default=8)
    parser.add_argument("--fill-cache", action="store_true",
                        help="fill the cache for all chunks but the last without running the model")
    parser.add_argument("--one", nargs=3, metavar=("DIR", "CONTEXT", "KV_BITS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        model_dir, context, kv = args.one
        print(json.dumps(measure(model_dir, int(context), None if kv == "none" else int(kv),
                                 args.fill_cache)))
        return 0

    from benchmarks.demo_model import demo_dir
    from optiq_tui.quant.plan import model_memory, predict_peak

    folder = demo_dir()
    mm = model_memory(folder)
    print(f"{'context':>7} {'kv':>4} {'predicted MB':>12} {'measured MB':>11} {'ratio':>6}"
          f" {'weights':>8} {'kv pred/meas':>13} {'time s':>7}")
    ratios = []
    for context in (int(c) for c in args.contexts.split(",")):
        for kv in (None, args.kv_bits):
            run = subprocess.run([sys.executable, __file__, "--one", str(folder), str(context),
                                  str(kv or "none"), *(["--fill-cache"] if args.fill_cache else [])],
                                 capture_output=True, text=True, check=True)
            got = json.loads(run.stdout.strip().splitlines()[-1])
            pred = predict_peak(mm, mm.source_bpw, context, kv_bits=kv)
            ratio = pred.total / got["peak"]
            ratios.append(ratio)
            print(f"{context:>7} {kv or '-':>4} {pred.total / 1e6:>12.1f} {got['peak'] / 1e6:>11.1f} "
                  f"{ratio:>6.3f} {pred.weights / got['weights']:>8.3f} "
                  f"{pred.kv_cache / max(got['kv'], 1):>13.3f} {got['seconds']:>7.0f}", flush=True)
    worst = max(abs(r - 1) for r in ratios)
    print(f"worst |predicted/measured - 1| = {worst:.3f} (target <= 0.10)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
