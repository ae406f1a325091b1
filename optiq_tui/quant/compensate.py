"""Error-compensated (GPTQ-style) quantization of one Linear or expert stack.

Rounding column by column and pushing each column's error onto the columns not
yet rounded, weighted by the inverse Hessian of the layer's inputs, minimises
||X Wᵀ − X Ŵᵀ|| far better than rounding each weight to nearest. The result is
a dequantized weight on mlx's own affine grid (bits 2-8, group 32/64/128,
scales and biases in the weight's dtype): ``mx.quantize`` of it reproduces it
exactly, so any writer that calls ``to_quantized`` ships what was measured.

Hessians (XᵀX) are summed in float32: mlx-lm's GPTQ sums them in the model's
dtype and 41 of the demo's 210 overflowed in float16.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import mlx.core as mx
import mlx.nn as nn
import numpy as np
from mlx.utils import tree_unflatten
from threadpoolctl import threadpool_limits


Call = tuple[Sequence[Any], dict[str, Any]]
Triple = tuple[mx.array, mx.array, mx.array]  # codes, scales, biases as mx.quantize returns them


def _switch_linear() -> type:
    from mlx_lm.models.switch_layers import SwitchLinear

    return SwitchLinear


class StandIn(nn.Module):
    """Wraps a module for a pass; models that read the wrapped module's attributes (e.g. a
    block's attention type, ``proj.weight``) still see them."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "inner" not in self:
                raise
            return getattr(self["inner"], name)


class _Recorder(StandIn):
    """Stands in for a Linear / SwitchLinear while a block runs; sums its inputs' XᵀX."""

    def __init__(self, inner: nn.Module, experts: int | None) -> None:
        super().__init__(inner)
        d = inner.weight.shape[-1]
        shape = (d, d) if experts is None else (experts, d, d)
        # Plain attributes (not mx.array members) so they never count as parameters.
        object.__setattr__(self, "xtx", mx.zeros(shape, dtype=mx.float32))
        object.__setattr__(self, "tokens", np.zeros(experts or 1, dtype=np.int64))
        object.__setattr__(self, "experts", experts)

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        if self.experts is None:
            rows = x.reshape(-1, x.shape[-1]).astype(mx.float32)
            object.__setattr__(self, "xtx", self.xtx + rows.T @ rows)
            self.tokens[0] += rows.shape[0]
        else:
            self._add_routed(x, args[0] if args else kwargs["indices"])
        return self.inner(x, *args, **kwargs)

    def _add_routed(self, x: mx.array, indices: mx.array) -> None:
        # gather_mm broadcasts x's batch dims against the indices: one (M, D) input per index.
        batch = np.broadcast_shapes(tuple(x.shape[:-2]), tuple(indices.shape))
        m, d = x.shape[-2:]
        rows = mx.broadcast_to(x, batch + (m, d)).reshape(-1, d).astype(mx.float32)
        idx = np.repeat(np.array(mx.broadcast_to(indices, batch)).reshape(-1), m)
        order = np.argsort(idx, kind="stable")
        counts = np.bincount(idx, minlength=self.experts)
        rows = rows[mx.array(order)]
        xtx = self.xtx
        start = 0
        for e, n in enumerate(counts):
            if n:
                part = rows[start:start + int(n)]
                xtx[e] = xtx[e] + part.T @ part
                start += int(n)
        object.__setattr__(self, "xtx", xtx)
        self.tokens += counts


def linear_paths(block: nn.Module) -> list[str]:
    """Paths (within ``block``) of the unquantized Linear and SwitchLinear layers."""
    switch = _switch_linear()
    return [p for p, m in block.named_modules()
            if p and (type(m) is nn.Linear or isinstance(m, switch))]


def collect_hessians(
    block: nn.Module, calls: Iterable[Call]
) -> tuple[dict[str, mx.array], dict[str, np.ndarray], list[Any]]:
    """Run ``block(*args, **kwargs)`` for each call, with every Linear / SwitchLinear
    wrapped, and return (XᵀX per path, tokens seen per path, the block's outputs).

    XᵀX is (D, D) float32 for a Linear and (E, D, D) for an expert stack, summed
    over the tokens routed to each expert; tokens is one count per expert.
    The block is restored afterwards, even on error.
    """
    switch = _switch_linear()
    paths = linear_paths(block)
    originals = {p: dict(block.named_modules())[p] for p in paths}
    recorders = {
        p: _Recorder(m, m.weight.shape[0] if isinstance(m, switch) else None)
        for p, m in originals.items()
    }
    outputs = []
    block.update_modules(tree_unflatten(list(recorders.items())))
    try:
        for args, kwargs in calls:
            out = block(*args, **kwargs)
            # One evaluation per call for the output and every sum: evaluating each sum as its
            # layer ran cut the block's graph into pieces (half the compensate stage on an MoE).
            mx.eval(out, [r.xtx for r in recorders.values()])
            outputs.append(out)
    finally:
        block.update_modules(tree_unflatten(list(originals.items())))
    return ({p: r.xtx for p, r in recorders.items()},
            {p: r.tokens.copy() for p, r in recorders.items()}, outputs)


def _inverse_factor(xtx: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor U of (H + λI)⁻¹ = UᵀU for each (D, D) of an (E, D, D) stack;
    inputs never seen get a unit diagonal.

    With J the order-reversing permutation and J H J = L Lᵀ, U = J L⁻¹ J: one
    Cholesky and one triangular inverse instead of inverting H and factoring again.
    numpy factors the whole stack in one call; a stack it cannot factor (a near-singular
    member) is factored one matrix at a time, each damped as hard as it needs.
    """
    h = xtx.astype(np.float64)
    diag = np.diagonal(h, axis1=-2, axis2=-1)
    dead = diag <= 0
    idx = np.arange(h.shape[-1])
    h[..., idx, idx] = np.where(dead, 1.0, diag)
    lam = damp * np.mean(np.diagonal(h, axis1=-2, axis2=-1), axis=-1)
    eye = np.eye(h.shape[-1])
    for tries in range(6):
        try:
            damped = h + (lam * 10 ** tries)[:, None, None] * eye
            chol = np.linalg.cholesky(damped[:, ::-1, ::-1])
            return np.linalg.solve(chol, np.broadcast_to(eye, h.shape))[:, ::-1, ::-1]
        except np.linalg.LinAlgError:
            if len(h) > 1:  # damp only the member that needs it
                return np.stack([_inverse_factor(m[None], damp)[0] for m in xtx])
            # near-singular inputs: damp harder rather than fail
    raise ValueError("Hessian is not positive definite even with heavy damping")


def _grid(group: np.ndarray, bits: int, group_size: int, dtype: mx.Dtype):
    """mlx's scale and bias for each row of ``group`` (..., group_size) (as stored, in
    ``dtype``), and the columns mlx pins to codes 0 and 2^bits−1 (its bias edge and the
    opposite extreme)."""
    g = mx.array(group).astype(dtype)
    _, scales, biases = mx.quantize(g, group_size=group_size, bits=bits)
    s = np.array(scales.astype(mx.float32))[..., 0]
    b = np.array(biases.astype(mx.float32))[..., 0]
    g32 = np.array(g.astype(mx.float32))
    lo, hi = g32.argmin(axis=-1), g32.argmax(axis=-1)
    low_edge = np.abs(g32.min(axis=-1)) > np.abs(g32.max(axis=-1))
    zero_at = np.where(low_edge, lo, hi)
    top_at = np.where(low_edge, hi, lo)
    return s, b, zero_at, top_at


def _gptq_matrix(w: np.ndarray, xtx: np.ndarray, bits: int, group_size: int,
                 dtype: mx.Dtype, damp: float, block: int) -> np.ndarray:
    """The compensated weights of a stack of (O, D) matrices (E, O, D) with their (E, D, D)
    XᵀX, as float32 values on the grid. One column loop serves the whole stack (an MoE
    layer's experts): per expert the arithmetic is the single matrix's."""
    # Transposed, so that each input column is one contiguous (E, O) slab.
    wt = np.ascontiguousarray(w.transpose(0, 2, 1), dtype=np.float32)
    u = _inverse_factor(xtx, damp).astype(np.float32)
    n, cols, rows = wt.shape
    top = float(2 ** bits - 1)
    out = np.empty_like(wt)
    for c0 in range(0, cols, block):
        c1 = min(c0 + block, cols)
        err = np.zeros((n, c1 - c0, rows), dtype=np.float32)
        for col in range(c0, c1):
            k = col % group_size
            if k == 0:
                s, b, zero_at, top_at = _grid(wt[:, col:col + group_size].transpose(0, 2, 1),
                                              bits, group_size, dtype)
                # mx.quantize picks the grid from each group's min and max: pinning those
                # two codes keeps the grid it would pick for the compensated weights.
                pinned = b != 0
            q = np.clip(np.rint((wt[:, col] - b) / s), 0.0, top)
            q[pinned & (zero_at == k)] = 0.0
            q[pinned & (top_at == k)] = top
            out[:, col] = s * q + b
            e = (wt[:, col] - out[:, col]) / u[:, col, col, None]
            wt[:, col + 1:c1] -= u[:, col, col + 1:c1, None] * e[:, None, :]
            err[:, col - c0] = e
        wt[:, c1:] -= np.matmul(u[:, c0:c1, c1:].transpose(0, 2, 1), err)
    return np.ascontiguousarray(out.transpose(0, 2, 1))


def output_error(weight: mx.array, w_hat: mx.array, xtx: mx.array) -> np.ndarray:
    """Per output row, ||X (w − ŵ)||² on the calibration inputs, from XᵀX (float64);
    for an expert stack (E, O, D) with (E, D, D) XᵀX, one row of errors per expert."""
    d = np.array(weight.astype(mx.float32), dtype=np.float64) - np.array(
        w_hat.astype(mx.float32), dtype=np.float64)
    h = np.array(xtx, dtype=np.float64)
    return ((d @ h) * d).sum(axis=-1)  # a BLAS matmul; np.einsum here took 60x longer


def _triple(values: mx.array, bits: int, group_size: int, dtype: mx.Dtype) -> Triple:
    """Codes, scales and biases of float32 ``values`` that lie on a ``dtype`` grid: quantizing
    in float32 and storing the scales in ``dtype`` recovers that grid exactly (mx.quantize
    itself chooses codes with float32 scales and stores them rounded)."""
    codes, scales, biases = mx.quantize(values, group_size=group_size, bits=bits)
    return codes, scales.astype(dtype), biases.astype(dtype)


def _dequantize(t: Triple, bits: int, group_size: int) -> mx.array:
    return mx.dequantize(*t, group_size=group_size, bits=bits)


# λ = DAMP × mean diag(XᵀX). GPTQ's usual 0.01 over-fits a few thousand calibration tokens:
# on the demo's optiq-plus plans (4.5 / 5.0 bpw) held-out KL was 0.384x / 0.203x uniform
# 4-bit's at 0.01, 0.352x / 0.177x at 0.1, 0.342x / 0.176x at 0.3, 0.359x at 1.0.
DAMP = 0.3


def compensate_quantized(weight: mx.array, xtx: mx.array, bits: int, group_size: int, *,
                         damp: float = DAMP, block: int = 128) -> Triple:
    """GPTQ-quantize ``weight`` (O, D), or an expert stack (E, O, D) with (E, D, D) XᵀX,
    at ``bits`` and ``group_size``: (codes, scales, biases) as ``mx.quantize`` lays
    them out, scales and biases in the weight's dtype.

    Rows whose calibration output error would be above round-to-nearest's keep
    round-to-nearest, so no row's error is worse than RTN's on these inputs.
    """
    if weight.shape[-1] % group_size:
        raise ValueError(f"input dimension {weight.shape[-1]} is not a multiple of {group_size}")
    # numpy's threaded BLAS hands an expert stack's small factorizations and products to its
    # threads for longer than they take on one (8 128-wide Cholesky + inverses: 490 ms against
    # 20 ms on the shared 2-core machine): one thread for a stack; a single matrix is large
    # enough to gain from them (the demo's compensation: 120 s on one thread, 106 s on two).
    threads = 1 if weight.ndim == 3 and weight.shape[0] > 1 else None
    with threadpool_limits(threads, user_api="blas"):
        return _compensate_stack(weight, xtx, bits, group_size, damp, block)


def _compensate_stack(weight: mx.array, xtx: mx.array, bits: int, group_size: int,
                      damp: float, block: int) -> Triple:
    rtn = mx.quantize(weight, group_size=group_size, bits=bits)
    # A Linear is a stack of one: every expert of a stack goes through one column loop.
    h = np.array(xtx.astype(mx.float32)).reshape(-1, *xtx.shape[-2:])
    seen = np.any(np.diagonal(h, axis1=1, axis2=2) > 0, axis=1)
    if not seen.any():
        return rtn  # no calibration token reached this layer
    w = np.array(weight.astype(mx.float32)).reshape(len(h), *weight.shape[-2:])
    block = max(group_size, block // group_size * group_size)
    raw = w.copy()  # an expert no token reached keeps round-to-nearest (below)
    raw[seen] = _gptq_matrix(w[seen], h[seen], bits, group_size, weight.dtype, damp, block)
    gptq = _triple(mx.array(raw.reshape(weight.shape)), bits, group_size, weight.dtype)
    # Per row, the first candidate whose output error is not above RTN's: the compensated
    # grid, else RTN nudged to a fixed point of quantize/dequantize, else plain RTN. The fixed
    # point is only made for the rows the compensated grid failed (often none).
    rtn_deq = _dequantize(rtn, bits, group_size)
    rtn_error = output_error(weight, rtn_deq, xtx)
    used = seen.reshape(weight.shape[:-2] + (1,))
    gptq_ok = (output_error(weight, _dequantize(gptq, bits, group_size), xtx) <= rtn_error) & used
    chosen = tuple(mx.where(mx.array(gptq_ok)[..., None], g, r) for g, r in zip(gptq, rtn))
    todo = ~gptq_ok & used
    if not todo.any():
        return chosen
    if weight.ndim == 2:  # a Linear: only its failed rows (quantizing is row by row)
        rows = mx.array(np.flatnonzero(todo))
        fixed = mx.quantize(_fixed_point(rtn_deq[rows], bits, group_size),
                            group_size=group_size, bits=bits)
        ok = output_error(weight[rows], _dequantize(fixed, bits, group_size), xtx) <= rtn_error[todo]
        keep = mx.array(ok)[:, None]
        return tuple(_put_rows(c, rows, mx.where(keep, f, c[rows])) for c, f in zip(chosen, fixed))
    fixed = mx.quantize(_fixed_point(rtn_deq, bits, group_size), group_size=group_size, bits=bits)
    ok = (output_error(weight, _dequantize(fixed, bits, group_size), xtx) <= rtn_error) & todo
    return tuple(mx.where(mx.array(ok)[..., None], f, c) for f, c in zip(fixed, chosen))


def _put_rows(a: mx.array, rows: mx.array, values: mx.array) -> mx.array:
    out = mx.array(a)
    out[rows] = values
    return out


def _fixed_point(w: mx.array, bits: int, group_size: int) -> mx.array:
    """Re-quantize until quantize/dequantize leaves ``w`` unchanged (mlx's own RTN output
    is not always such a point: its grid can move by an ulp when re-derived)."""
    for _ in range(4):
        nxt = _dequantize(mx.quantize(w, group_size=group_size, bits=bits), bits, group_size)
        if mx.array_equal(nxt, w).item():
            break
        w = nxt
    return w


def compensate(weight: mx.array, xtx: mx.array, bits: int, group_size: int, **kw: Any) -> mx.array:
    """The dequantized weight of :func:`compensate_quantized`, in the weight's dtype.

    For float16 and float32 weights ``mx.quantize`` of it gives back the same
    codes, scales and biases, so a writer calling ``to_quantized`` ships exactly
    this. (bfloat16 cannot hold an 8-bit grid: write the triple there.)
    """
    return _dequantize(compensate_quantized(weight, xtx, bits, group_size, **kw), bits, group_size)


def quantized_module(module: nn.Module, triple: Triple, bits: int, group_size: int) -> nn.Module:
    """``module.to_quantized`` at this width, carrying the compensated codes, scales and biases."""
    layer = module.to_quantized(group_size=group_size, bits=bits)
    layer.weight, layer.scales, layer.biases = triple
    return layer
