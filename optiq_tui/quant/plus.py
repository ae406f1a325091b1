"""optiq-plus: every block's layers quantized at their allocated widths with error
compensation (quant/compensate.py), block by block on calibration inputs.

Inputs reach the blocks through the model's own ``__call__``: one pass with each
block wrapped records what the model hands it (masks, positions, whatever the
architecture passes), and the hidden state entering the first block. Then each
block in turn: its layers' XᵀX from its real call, compensation at each layer's
width, and a rerun of the compensated block to give the next block its inputs,
so later blocks compensate for the rounding already done before them. Last, the
head (or tied embedding, which holds ~30% of uniform 4-bit's KL on the demo) on the
final hidden states that reach it through the compensated blocks.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import mlx.core as mx
import mlx.nn as nn

from optiq_tui.progress import Log, ProgressFn, check_cancel, no_progress
from optiq_tui.quant.backbone import find_blocks
from optiq_tui.quant.compensate import (
    Triple,
    collect_hessians,
    compensate_quantized,
    linear_paths,
)
from optiq_tui.quant.config import KEEP, group_of
from optiq_tui.quant.layers import get_module


class _Stop(Exception):
    """Raised by the last block's recorder: the head's logits are not needed."""


class _Entry(nn.Module):
    """Records the arguments a block is called with (the first block's hidden state too)."""

    def __init__(self, inner: nn.Module, sink: list, keep_hidden: bool, last: bool) -> None:
        super().__init__()
        self.inner = inner
        object.__setattr__(self, "sink", sink)
        object.__setattr__(self, "flags", (keep_hidden, last))

    def __getattr__(self, name: str) -> Any:
        # Models that read a block's attributes (e.g. its attention type) still see the block.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "inner" not in self:
                raise
            return getattr(self["inner"], name)

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        keep_hidden, last = self.flags
        self.sink.append((x if keep_hidden else None, args, kwargs))
        if last:
            raise _Stop
        return self.inner(x, *args, **kwargs)


def record_block_calls(model: nn.Module, sequences: Sequence[Sequence[int]]):
    """(first block's input per sequence, per block: per sequence (other args, kwargs))."""
    blocks = _blocks(model)
    sinks: list[list] = [[] for _ in blocks]
    originals = list(blocks)
    for i, block in enumerate(originals):
        blocks[i] = _Entry(block, sinks[i], i == 0, i == len(originals) - 1)
    try:
        for seq in sequences:
            try:
                model(mx.array([list(seq)]))
            except _Stop:
                pass
            mx.eval(sinks[0][-1][0])
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block
    first = [x for x, _a, _k in sinks[0]]
    rest = [[(a, k) for _x, a, k in sink] for sink in sinks]
    return first, rest


def compensate_model(model: nn.Module, choice: dict[str, int], group_size: int,
                     sequences: Sequence[Sequence[int]], *, progress: ProgressFn = no_progress,
                     cancel: threading.Event | None = None, head: bool = True) -> dict[str, Triple]:
    """Compensated (codes, scales, biases) for every block layer ``choice`` quantizes, and with
    ``head`` for the head / tied embedding, at its width and group (a config.Width's own, else
    ``group_size``).

    The model computes in float32 meanwhile and is left in its own dtype, its
    compensated layers holding their dequantized values (what the quant computes).
    """
    dtype = next(v.dtype for _k, v in _float_params(model))
    model.set_dtype(mx.float32)
    paths = {id(m): p for p, m in model.named_modules()}
    triples: dict[str, Triple] = {}
    try:
        hidden, calls = record_block_calls(model, sequences)
        blocks = _blocks(model)
        for i, block in enumerate(blocks):
            check_cancel(cancel)
            prefix = paths[id(block)]
            block_calls = [((h, *a), k) for h, (a, k) in zip(hidden, calls[i])]
            xtx, _tokens, _ = collect_hessians(block, block_calls)
            for rel in linear_paths(block):
                width = choice.get(f"{prefix}.{rel}", KEEP)
                if width == KEEP:
                    continue
                bits, group = int(width), group_of(width, group_size)
                layer = get_module(block, rel)
                triple = compensate_quantized(layer.weight.astype(dtype), xtx[rel], bits, group)
                triples[f"{prefix}.{rel}"] = triple
                layer.weight = mx.dequantize(*triple, group_size=group, bits=bits).astype(mx.float32)
            del xtx
            hidden = [block(*args, **kw) for args, kw in block_calls]
            mx.eval(hidden)
            progress(Log(f"compensated block {i + 1}/{len(blocks)}"))
        found = _head(model) if head else None
        if found is not None and choice.get(found[0], KEEP) != KEEP:
            check_cancel(cancel)
            path, module = found
            width = choice[path]
            bits, group = int(width), group_of(width, group_size)
            xtx = _head_hessian(model, module, sequences, hidden)
            triples[path] = compensate_quantized(module.weight.astype(dtype), xtx, bits, group)
            module.weight = mx.dequantize(*triples[path], group_size=group, bits=bits).astype(mx.float32)
            progress(Log(f"compensated the head ({path})"))
    finally:
        model.set_dtype(dtype)
    return triples


def _head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(path, module) of what computes the logits: ``lm_head``, or a tied embedding."""
    modules = dict(model.named_modules())
    heads = [(p, m) for p, m in modules.items() if p.split(".")[-1] == "lm_head" and "weight" in m]
    if heads:
        return heads[0]
    tied = [(p, m) for p, m in modules.items() if isinstance(m, nn.Embedding)]
    return tied[0] if len(tied) == 1 else None


class _Replay(nn.Module):
    """Stands in for a block while the head's inputs are recorded: the first returns the last
    block's (compensated) output for the sequence, the others pass their input on."""

    def __init__(self, inner: nn.Module, outputs: list | None) -> None:
        super().__init__()
        self.inner = inner
        object.__setattr__(self, "outputs", outputs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if "inner" not in self:
                raise
            return getattr(self["inner"], name)

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        return x if self.outputs is None else self.outputs.pop(0)


def _head_hessian(model: nn.Module, module: nn.Module, sequences, finals: list) -> mx.array:
    """XᵀX (float32) of what reaches the head on the calibration: the last block's outputs
    ``finals`` replayed through the model's own code after the blocks (its final norm); the
    blocks are not rerun and the logits never computed. A tied embedding is reached through
    ``as_linear``."""
    xtx = [mx.zeros((module.weight.shape[-1],) * 2, dtype=mx.float32)]

    def record(x: mx.array, *_args: Any, **_kwargs: Any) -> mx.array:
        rows = x.reshape(-1, x.shape[-1]).astype(mx.float32)
        xtx[0] = xtx[0] + rows.T @ rows
        mx.eval(xtx[0])
        raise _Stop

    blocks = _blocks(model)
    originals = list(blocks)
    replayed = list(finals)
    for i, block in enumerate(originals):
        blocks[i] = _Replay(block, replayed if i == 0 else None)
    tied = isinstance(module, nn.Embedding)
    if tied:
        object.__setattr__(module, "as_linear", record)  # the instance's, shadowing the class's
    else:
        parent_path, _, name = next(p for p, m in model.named_modules() if m is module).rpartition(".")
        parent = get_module(model, parent_path) if parent_path else model
        setattr(parent, name, _Head(record))
    try:
        for seq in sequences:
            try:
                model(mx.array([list(seq)]))
            except _Stop:
                pass
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block
        if tied:
            object.__delattr__(module, "as_linear")
        else:
            setattr(parent, name, module)
    return xtx[0]


class _Head(nn.Module):
    """Stands in for an untied head: hands its input to ``record``."""

    def __init__(self, record) -> None:
        super().__init__()
        object.__setattr__(self, "record", record)

    def __call__(self, x: mx.array, *args: Any, **kwargs: Any) -> mx.array:
        return self.record(x)


def _blocks(model: nn.Module) -> list:
    """The model's own list of blocks (``model.layers`` can be a copy: qwen3_moe's slices it)."""
    found = find_blocks(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no list of transformer blocks")
    return found[1]


def apply_triples(model: nn.Module, triples: dict[str, Triple]) -> None:
    """Put the compensated codes, scales and biases into the quantized model's layers, exactly
    (after the writer's ``to_quantized``, whose own rounding of them may differ by an ulp)."""
    for path, triple in triples.items():
        module = get_module(model, path)
        module.weight, module.scales, module.biases = triple


def _float_params(model: nn.Module):
    from mlx.utils import tree_flatten

    return [(k, v) for k, v in tree_flatten(model.parameters()) if mx.issubdtype(v.dtype, mx.floating)]
