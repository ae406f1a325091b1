"""Error compensation against round-to-nearest on the demo, uniform width.

Every layer (embedding / tied head included) at ``--bits`` with group 64: once
rounded to nearest, once with the block layers compensated (quant/plus.py on
the shipped calibration). Mean KL to the source on held-out text the
calibration never saw, with its 95% interval, p99 KL, the ratio, the time
compensation took, and flips on the shipped greedy prompts. Computed as
quantize-then-dequantize in float32 (the values QuantizedLinear computes with).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
        python benchmarks/bench_compensate.py [--bits 4] [--no-flips]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--calibration", type=int, default=8, help="calibration sequences of 512 tokens")
    parser.add_argument("--heldout-tokens", type=int, default=4096)
    parser.add_argument("--no-flips", action="store_true")
    parser.add_argument("--head", action="store_true", help="compensate the (tied) head too")
    args = parser.parse_args()

    import mlx.core as mx
    import mlx_lm

    from benchmarks.demo_model import demo_dir
    from optiq_tui.measures.flips import count_flips
    from optiq_tui.measures.metrics import kl_interval, percentile, token_kl
    from optiq_tui.measures.texts import heldout_tokens
    from optiq_tui.quant.calibration import build_calibration
    from optiq_tui.quant.layers import get_module, qdq
    from optiq_tui.quant.plus import compensate_model

    folder = str(demo_dir())
    source, tok = mlx_lm.load(folder)
    paths = [p for p, m in source.named_modules()
             if hasattr(m, "to_quantized") and "weight" in m and p]
    block_paths = [p for p in paths if ".layers." in p]
    cal = build_calibration(tok, n_sequences=args.calibration, seq_len=512).sequences
    held = heldout_tokens(tok, max_tokens=args.heldout_tokens, seq_len=512)

    def rtn_in_place(model, which):
        for p in which:
            layer = get_module(model, p)
            layer.weight = qdq(layer.weight, args.bits, 64)

    rtn, _ = mlx_lm.load(folder)
    rtn_in_place(rtn, paths)
    plus, _ = mlx_lm.load(folder)
    t0 = time.perf_counter()
    compensated = block_paths + [p for p in paths if p not in block_paths and args.head]
    compensate_model(plus, {p: args.bits for p in compensated}, 64, cal, head=args.head)
    seconds = time.perf_counter() - t0
    rtn_in_place(plus, [p for p in paths if p not in compensated])
    for m in (source, rtn, plus):
        m.set_dtype(mx.float32)

    def kls(model):
        out = []
        for seq in held:
            x = mx.array([seq])
            kl = token_kl(source(x), model(x))
            mx.eval(kl)
            out.append(kl)
        return out

    print(f"demo, uniform {args.bits}-bit g64, {len(cal)} calibration sequences, "
          f"{sum(map(len, held))} held-out tokens; compensation took {seconds:.0f} s")
    rows = {}
    for name, model in (("round to nearest", rtn), ("compensated", plus)):
        per_seq = kls(model)
        ci = kl_interval(per_seq)
        p99 = percentile(mx.concatenate([k.reshape(-1) for k in per_seq]), 99)
        flips = None if args.no_flips else count_flips((source, tok), (model, tok))
        rows[name] = ci.mean
        flip_text = "" if flips is None else f"  flips {len(flips.changed)}/{len(flips.prompts)}"
        print(f"{name:>17}: mean KL {ci.mean:.4f} [{ci.low:.4f}, {ci.high:.4f}]  p99 {p99:.3f}{flip_text}",
              flush=True)
    print(f"KL ratio compensated / round-to-nearest: {rows['compensated'] / rows['round to nearest']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
