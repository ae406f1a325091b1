"""A logits processor that makes a real model emit a chosen token sequence (tests and test engines)."""

from __future__ import annotations


def forcing(sequence: list[int]):
    """A logits processor that makes the model emit ``sequence`` (the model still runs every step)."""
    import mlx.core as mx

    step = iter(range(len(sequence)))

    def processor(_tokens, logits):
        i = next(step, len(sequence) - 1)
        mask = mx.full(logits.shape, -1e9, dtype=logits.dtype)
        mask[..., sequence[i]] = 0
        return logits + mask

    return processor
