"""Which weights a quant can choose widths for, and what each choice costs in bits.

Bits are counted the way mlx-lm's ``compute_bits_per_weight`` counts a saved
model: every byte of every array (norms, biases, unquantized layers, packed
weights, scales and biases of the groups) over the logical parameter count.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from optiq_tui.quant.config import KEEP, cost_per_param, group_of


@dataclass(frozen=True)
class QuantItem:
    """One weight matrix (or expert stack) that gets one width.

    ``path`` is the module path mlx-lm's quantize predicate sees, e.g.
    ``model.layers.3.mlp.down_proj`` or ``model.layers.0.mlp.experts.up_proj``.
    ``block`` is the transformer block index, -1 for the embedding / lm_head.
    """

    path: str
    kind: str  # "linear" | "embedding" | "lm_head" | "experts"
    shape: tuple[int, ...]
    block: int
    quantizable: bool
    reason: str = ""
    tied: bool = False

    def takes(self, width: int, run_group: int) -> bool:
        """Whether this item can be quantized at ``width`` (its group must divide the input)."""
        return width == KEEP or (self.quantizable and self.shape[-1] % group_of(width, run_group) == 0)

    @property
    def n_params(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def _kind(path: str, module: nn.Module) -> str:
    if isinstance(module, nn.Embedding):
        return "embedding"
    if path.endswith("lm_head"):
        return "lm_head"
    if module.weight.ndim == 3:
        return "experts"
    return "linear"


# Names of the list that holds a model's transformer blocks (mlx-lm's models use these).
BLOCK_LISTS = ("layers", "h", "blocks")


def block_of(path: str) -> int:
    parts = path.split(".")
    for i, part in enumerate(parts[:-1]):
        if part in BLOCK_LISTS and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return -1


def quant_items(model: nn.Module, group_size: int, tied: bool) -> list[QuantItem]:
    """Every module mlx-lm could quantize, with whether it can be at ``group_size``.

    A layer whose input dimension is not a multiple of the group size stays
    unquantized (mlx-lm's own quantize_model skips it the same way).
    """
    items = []
    for path, module in model.named_modules():
        if not hasattr(module, "to_quantized") or "weight" not in module:
            continue
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            continue
        shape = tuple(module.weight.shape)
        ok = shape[-1] % group_size == 0
        reason = "" if ok else (
            f"input dimension {shape[-1]} is not a multiple of group size {group_size}; kept unquantized"
        )
        kind = _kind(path, module)
        items.append(
            QuantItem(path, kind, shape, block_of(path), ok, reason,
                      tied=tied and kind == "embedding")
        )
    return items


def dtype_bits(dtype: mx.Dtype) -> int:
    return dtype.size * 8


@dataclass(frozen=True)
class BitBudget:
    """The bit accounting of one model: fixed bits (what no choice changes) and totals."""

    total_params: int
    fixed_bits: float
    scale_bits: int
    group_size: int

    def item_cost(self, item: QuantItem, bits: int) -> float:
        """``bits`` a width at the run's group or a config.Width at its own."""
        return item.n_params * cost_per_param(bits, group_of(bits, self.group_size), self.scale_bits)

    def bpw(self, items: list[QuantItem], choice: dict[str, int]) -> float:
        chosen = sum(self.item_cost(i, choice[i.path]) for i in items if i.quantizable)
        return (self.fixed_bits + chosen) / self.total_params


def bit_budget(model: nn.Module, items: list[QuantItem], group_size: int) -> BitBudget:
    """Fixed bits = every parameter that is not a quantizable item's weight, at its dtype.

    The parameter count is mlx-lm's own (it leaves out parameters held by
    non-leaf modules, such as gpt-oss attention sinks, while their bytes count).
    """
    from mlx_lm.utils import get_total_parameters

    chosen_weights = {f"{i.path}.weight" for i in items if i.quantizable}
    total = get_total_parameters(model)
    fixed = 0.0
    scale_bits = 16
    for name, value in tree_flatten(model.parameters()):
        if name in chosen_weights:
            scale_bits = dtype_bits(value.dtype)  # scales and biases take the weight's dtype
        else:
            fixed += value.size * dtype_bits(value.dtype)
    return BitBudget(total, fixed, scale_bits, group_size)


# Rows per slice when quantizing large matrices: MLX's CPU dequantize holds float32
# temporaries about five times its output, which for a whole 49152 x 576 embedding is
# ~280 MB. Groups never cross rows, so slicing rows gives bit-identical results.
ROW_SLICE = 4096


def qdq(weight: mx.array, bits: int, group_size: int) -> mx.array:
    """Quantize then dequantize with mlx's affine quantizer, in the weight's own dtype:
    the exact values a QuantizedLinear / QuantizedEmbedding of this width computes with."""
    if bits == KEEP:
        return weight

    def one(w: mx.array) -> mx.array:
        q, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
        return mx.dequantize(q, scales, biases, group_size=group_size, bits=bits)

    return _by_rows(weight, one)


def dequantize_rows(weight: mx.array, scales: mx.array, biases: mx.array | None,
                    group_size: int, bits: int, mode: str = "affine") -> mx.array:
    """``mx.dequantize`` a slice of rows at a time (see ROW_SLICE)."""
    rows = weight.shape[0]
    if weight.ndim != 2 or rows <= ROW_SLICE:
        return mx.dequantize(weight, scales, biases, group_size=group_size, bits=bits, mode=mode)
    pieces = []
    for r in range(0, rows, ROW_SLICE):
        b = None if biases is None else biases[r:r + ROW_SLICE]
        piece = mx.dequantize(weight[r:r + ROW_SLICE], scales[r:r + ROW_SLICE], b,
                              group_size=group_size, bits=bits, mode=mode)
        mx.eval(piece)
        pieces.append(piece)
    return mx.concatenate(pieces)


def _by_rows(weight: mx.array, fn) -> mx.array:
    if weight.ndim != 2 or weight.shape[0] <= ROW_SLICE:
        return fn(weight)
    pieces = []
    for r in range(0, weight.shape[0], ROW_SLICE):
        piece = fn(weight[r:r + ROW_SLICE])
        mx.eval(piece)
        pieces.append(piece)
    return mx.concatenate(pieces)


def get_module(model: nn.Module, path: str) -> nn.Module:
    m = model
    for part in path.split("."):
        m = m[int(part)] if part.isdigit() else getattr(m, part)
    return m
