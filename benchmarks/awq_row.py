"""mlx-lm's AWQ as a bench_plus row: its own search (``mlx_lm.quant.awq.awq_quantize``)
on the same calibration as the optiq rows, written with ``mlx_lm.utils.save``.

One change, for this CPU only: AWQ quantizes every block twice to compare its
loss before and after the search, and mlx's CPU quantized matmul is ~20x slower
than a dense one (quant notes: the stock run was projected at ~72 minutes on the
demo). While it runs, its ``nn.quantize`` holds the same quantized values as dense
weights, and the packed values behind them are what is saved.
"""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_map


class _OnGrid(nn.Module):
    """A Linear whose weight holds its quantize→dequantize values, computed densely."""

    def __init__(self, linear: nn.Linear, group_size: int, bits: int) -> None:
        super().__init__()
        q = mx.quantize(linear.weight, group_size=group_size, bits=bits)
        self.weight = mx.dequantize(*q, group_size=group_size, bits=bits)
        # Kept off the parameters: quantizing the dequantized values again lands elsewhere.
        object.__setattr__(self, "packed", q)
        if "bias" in linear:
            self.bias = linear.bias
        self.group_size, self.bits = group_size, bits

    def __call__(self, x: mx.array) -> mx.array:
        y = x @ self.weight.T
        return y + self.bias if "bias" in self else y

    def to_quantized(self) -> nn.QuantizedLinear:
        out_dims, in_dims = self.weight.shape
        layer = nn.QuantizedLinear(in_dims, out_dims, "bias" in self, self.group_size, self.bits)
        layer.weight, layer.scales, layer.biases = self.packed
        if "bias" in self:
            layer.bias = self.bias
        return layer


def _swap(model: nn.Module, fn) -> None:
    model.update_modules(tree_map(fn, model.leaf_modules(), is_leaf=nn.Module.is_module))


def _on_grid(model: nn.Module, group_size: int = 64, bits: int = 4, **_: object) -> None:
    def swap(m):
        if type(m) is nn.Linear:
            return _OnGrid(m, group_size, bits)
        if isinstance(m, nn.Module) and "Switch" in type(m).__name__:
            raise NotImplementedError("the AWQ row is for dense models")
        return m
    _swap(model, swap)


def awq_row(folder: Path, out: Path, calibration: list[list[int]], *, bits: int = 4,
            group_size: int = 64) -> SimpleNamespace:
    """Run mlx-lm's AWQ on the source at ``folder`` and save the quant at ``out``; the result
    has what bench_plus reads from a pipeline result."""
    import mlx_lm
    from mlx_lm.quant import awq
    from mlx_lm.utils import compute_bits_per_weight, save

    model, tok, config = mlx_lm.load(str(folder), return_config=True)
    awq_config = awq.AWQ_MODEL_CONFIGS[config["model_type"]]
    inputs = mx.array(calibration)
    dtype = model.model.embed_tokens.weight.dtype
    t0 = time.perf_counter()
    # Searched in float32 (a float16 matmul has no BLAS path on this CPU: ~300 s a block),
    # saved with the source's float dtype, so scales and biases cost what uniform 4-bit's do.
    model.set_dtype(mx.float32)
    with mock.patch.object(awq.nn, "quantize", _on_grid):
        awq.awq_quantize(model, inputs, awq_config, bits=bits, group_size=group_size,
                         embed_bits=bits, embed_group_size=group_size)
    _swap(model, lambda m: m.to_quantized() if isinstance(m, _OnGrid) else m)
    model.set_dtype(dtype)
    seconds = time.perf_counter() - t0
    config = awq.update_config(model, config)
    bpw = compute_bits_per_weight(model)
    save(out, folder, model, tok, config)
    return SimpleNamespace(path=out, achieved_bpw=bpw, timings={"awq": seconds}, cache_hit=False,
                           bit_histogram={}, refine=None)
