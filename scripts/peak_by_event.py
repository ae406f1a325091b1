"""Peak MLX memory between consecutive progress events of a quantize (where the peak comes from).

Usage: OPTIQ_HOME=... python scripts/peak_by_event.py MODEL [--target-bpw 5.0]
Prints one line per event whose interval peaked above the source's size / 2.
"""

from __future__ import annotations

import argparse
import time

import mlx.core as mx

from optiq_tui.library.catalog import resolve
from optiq_tui.quant.config import QuantConfig
from optiq_tui.quant.events import LayerScore
from optiq_tui.quant.pipeline import quantize


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--target-bpw", type=float, default=5.0)
    args = ap.parse_args()
    source = resolve(args.model)
    t0 = time.perf_counter()

    def progress(event) -> None:
        # Read and reset at every event: each line is the peak since the previous one.
        peak = mx.get_peak_memory()
        mx.reset_peak_memory()
        if isinstance(event, LayerScore):
            return
        what = getattr(event, "message", None) or f"{getattr(event, 'stage', '')} {getattr(event, 'state', '')}"
        print(f"{time.perf_counter() - t0:7.1f}s {peak / 1e6:8.1f} MB  {type(event).__name__}: {what}",
              flush=True)

    result = quantize(source, QuantConfig(target_bpw=args.target_bpw), progress=progress)
    print(f"source {source.size_bytes / 1e6:.1f} MB, peak {result.peak_memory_bytes / 1e6:.1f} MB "
          f"({result.peak_memory_bytes / source.size_bytes:.2f}x); quality {result.quality}")


if __name__ == "__main__":
    main()
