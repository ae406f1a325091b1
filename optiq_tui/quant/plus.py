"""optiq-plus: every block's layers quantized at their allocated widths with error
compensation (quant/compensate.py), block by block on calibration inputs.

Inputs reach the blocks through the model's own ``__call__``: one pass with each
block wrapped records what the model hands it (masks, positions, whatever the
architecture passes), and the hidden state entering the first block. Then each
block in turn: its layers' XᵀX from its real call on the source's hidden states, and
compensation at each layer's width. Last, the head (or tied embedding, which holds
~30% of uniform 4-bit's KL on the demo) on the final hidden states.

The inputs are the source's, not those of the blocks already compensated: on the
demo's optiq-plus plan at 4.5 bpw both gave the same held-out KL (0.385x and 0.387x
uniform 4-bit's), and one forward pass then serves several plans (the low-width gate's
two) with the layers they share compensated once.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Sequence

import mlx.core as mx
import mlx.nn as nn

from optiq_tui.progress import Log, ProgressFn, check_cancel, no_progress
from optiq_tui.quant.backbone import find_blocks, split_hidden
from optiq_tui.quant.compensate import (
    StandIn,
    Triple,
    collect_hessians,
    compensate_quantized,
    linear_paths,
)
from optiq_tui.quant.config import KEEP, group_of
from optiq_tui.quant.layers import block_of, get_module


class _Stop(Exception):
    """Raised by the last block's recorder: the head's logits are not needed."""


class _Entry(StandIn):
    """Records the arguments a block is called with (the first block's hidden state too)."""

    def __init__(self, inner: nn.Module, sink: list, keep_hidden: bool, last: bool) -> None:
        super().__init__(inner)
        object.__setattr__(self, "sink", sink)
        object.__setattr__(self, "flags", (keep_hidden, last))

    def __call__(self, *args: Any, **kwargs: Any) -> mx.array:
        keep_hidden, last = self.flags
        # Recorded as (hidden, args, kwargs): replayed with the hidden state first, by position.
        x, args, kwargs, _name = split_hidden(self.inner, args, kwargs)
        self.sink.append((x if keep_hidden else None, args, kwargs))
        if last:
            raise _Stop
        return self.inner(x, *args, **kwargs)


@contextmanager
def _blocks_replaced(model: nn.Module, make):
    """The model's blocks stood in for by ``make(index, block)`` for a pass; put back after,
    even on error."""
    blocks = _blocks(model)
    originals = list(blocks)
    for i, block in enumerate(originals):
        blocks[i] = make(i, block)
    try:
        yield
    finally:
        for i, block in enumerate(originals):
            blocks[i] = block


def _run_to_stop(model: nn.Module, seq: Sequence[int]) -> None:
    try:
        model(mx.array([list(seq)]))
    except _Stop:
        pass


def record_block_calls(model: nn.Module, sequences: Sequence[Sequence[int]]):
    """(first block's input per sequence, per block: per sequence (other args, kwargs))."""
    n = len(_blocks(model))
    sinks: list[list] = [[] for _ in range(n)]
    with _blocks_replaced(model, lambda i, b: _Entry(b, sinks[i], i == 0, i == n - 1)):
        for seq in sequences:
            _run_to_stop(model, seq)
            mx.eval(sinks[0][-1][0])
    first = [x for x, _a, _k in sinks[0]]
    rest = [[(a, k) for _x, a, k in sink] for sink in sinks]
    return first, rest


def compensate_plans(model: nn.Module, choices: Sequence[dict[str, int]], group_size: int,
                     sequences: Sequence[Sequence[int]], *, progress: ProgressFn = no_progress,
                     cancel: threading.Event | None = None, head: bool = True) -> list[dict[str, Triple]]:
    """For each plan in ``choices``, compensated (codes, scales, biases) of every block layer it
    quantizes, and with ``head`` of the head / tied embedding, at its width and group (a
    config.Width's own, else ``group_size``). The model is left as it was.

    One pass over the calibration serves every plan: a layer two plans give the same width is
    compensated once (optiq-plus's gate compares two plans that share most of their layers).
    """
    dtype = next(v.dtype for _k, v in _float_params(model))
    model.set_dtype(mx.float32)
    paths = {id(m): p for p, m in model.named_modules()}
    done: dict[tuple[str, str], Triple] = {}

    def compensate_at(path: str, weight: mx.array, xtx: mx.array) -> None:
        for width in {repr(c[path]): c[path] for c in choices if c.get(path, KEEP) != KEEP}.values():
            if (path, repr(width)) not in done:
                done[path, repr(width)] = compensate_quantized(
                    weight.astype(dtype), xtx, int(width), group_of(width, group_size))

    try:
        hidden, calls = record_block_calls(model, sequences)
        blocks = _blocks(model)
        for i, block in enumerate(blocks):
            check_cancel(cancel)
            prefix = paths[id(block)]
            xtx, _tokens, hidden = collect_hessians(
                block, [((h, *a), k) for h, (a, k) in zip(hidden, calls[i])])
            for rel in linear_paths(block):
                compensate_at(f"{prefix}.{rel}", get_module(block, rel).weight, xtx[rel])
            del xtx
            progress(Log(f"compensated block {i + 1}/{len(blocks)}"))
        found = _head(model) if head else None
        if found is not None and any(c.get(found[0], KEEP) != KEEP for c in choices):
            check_cancel(cancel)
            path, module = found
            compensate_at(path, module.weight, _head_hessian(model, module, sequences, hidden))
            progress(Log(f"compensated the head ({path})"))
    finally:
        model.set_dtype(dtype)
    return [{p: done[p, repr(w)] for p, w in c.items() if (p, repr(w)) in done} for c in choices]


def compensate_model(model: nn.Module, choice: dict[str, int], group_size: int,
                     sequences: Sequence[Sequence[int]], *, progress: ProgressFn = no_progress,
                     cancel: threading.Event | None = None, head: bool = True) -> dict[str, Triple]:
    """:func:`compensate_plans` for one plan; the model's compensated layers are then left
    holding their dequantized values (what the quant computes), in the model's dtype."""
    triples = compensate_plans(model, [choice], group_size, sequences, progress=progress,
                               cancel=cancel, head=head)[0]
    for path, triple in triples.items():
        layer = get_module(model, path)
        layer.weight = mx.dequantize(*triple, group_size=group_of(choice[path], group_size),
                                     bits=int(choice[path])).astype(layer.weight.dtype)
    return triples


def _head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """(path, module) of what computes the logits: the Linear outside the blocks with a row
    per token of an embedding's vocabulary (``lm_head``, gpt_neox's ``embed_out``,
    internlm2's ``output``, phixtral's ``lm_head.linear``), else the largest embedding (tied;
    gpt2's ``wte``, not its position table ``wpe``)."""
    outside = [(p, m) for p, m in model.named_modules() if "weight" in m and block_of(p) < 0]
    embeddings = [(p, m) for p, m in outside if isinstance(m, nn.Embedding)]
    if not embeddings:
        return None
    vocabs = {m.weight.shape[0] for _p, m in embeddings}
    heads = [(p, m) for p, m in outside if type(m) is nn.Linear and m.weight.shape[0] in vocabs]
    if heads:
        return heads[0] if len(heads) == 1 else None
    tied = [(p, m) for p, m in embeddings if m.weight.shape[0] == max(vocabs)]
    return tied[0] if len(tied) == 1 else None


class _Replay(StandIn):
    """Stands in for a block while the head's inputs are recorded: the first returns the last
    block's output for the sequence, the others pass their input on."""

    def __init__(self, inner: nn.Module, outputs: list | None) -> None:
        super().__init__(inner)
        object.__setattr__(self, "outputs", outputs)

    def __call__(self, *args: Any, **kwargs: Any) -> mx.array:
        x = split_hidden(self.inner, args, kwargs)[0]
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

    replayed = list(finals)
    tied = isinstance(module, nn.Embedding)
    if tied:
        object.__setattr__(module, "as_linear", record)  # the instance's, shadowing the class's
    else:
        parent_path, _, name = next(p for p, m in model.named_modules() if m is module).rpartition(".")
        parent = get_module(model, parent_path) if parent_path else model
        setattr(parent, name, _Head(record))
    try:
        with _blocks_replaced(model, lambda i, b: _Replay(b, replayed if i == 0 else None)):
            for seq in sequences:
                _run_to_stop(model, seq)
    finally:
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
