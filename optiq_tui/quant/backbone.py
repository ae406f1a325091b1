"""A decoder model seen as embed -> blocks -> norm -> head, run block by block.

mlx-lm's ``Model.__call__`` runs the whole graph at the weights' dtype; on a
CPU float16 matmuls are ~30x slower than float32 with OpenBLAS. Running the
blocks ourselves lets the weights stay in their stored dtype (no float32 copy
of the model) while activations are float32, so every matmul promotes to
float32 one layer at a time. It also lets the sensitivity pass cache the
hidden state entering each block and swap one block's weights for
quantized-dequantized ones without touching the rest.

With :meth:`Backbone.stream_blocks` the blocks' weights stay on disk: each
block is read when a pass reaches it and dropped when the pass moves on, so a
measurement holds the embedding / head and one block, not the whole model
(the layer-by-layer design that extends to models larger than memory).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.models.base import create_attention_mask

from optiq_tui.progress import OptiqError

# (module path, weight) -> weight to compute with; None means the weights as they are.
WeightFn = Callable[[str, mx.array], mx.array]

# Vocabulary rows per slice when the head is cast to float32 (4096 x 576 x 4 B = 9 MB).
VOCAB_CHUNK = 4096


class Backbone:
    """The pieces of an mlx-lm decoder (llama / qwen3 / gpt_oss style) and how to run them."""

    def __init__(self, model: nn.Module, config: dict) -> None:
        inner = getattr(model, "model", None)
        needed = ("embed_tokens", "layers", "norm")
        if inner is None or not all(hasattr(inner, n) for n in needed):
            raise OptiqError(
                f"model type {config.get('model_type')!r} does not have the decoder layout "
                "(model.embed_tokens / layers / norm) the OptiQ measurement pass runs; "
                "use --uniform B for a uniform quant of it"
            )
        self.model = model
        self.embed: nn.Embedding = inner.embed_tokens
        self.blocks: list[nn.Module] = list(inner.layers)
        self.norm: nn.Module = inner.norm
        lm_head = getattr(model, "lm_head", None)
        self.tied = lm_head is None
        self.head_path = "model.embed_tokens" if self.tied else "lm_head"
        self.head: nn.Module = self.embed if self.tied else lm_head
        if "bias" in self.head and not self.tied:
            raise OptiqError("an lm_head with a bias is not supported by the measurement pass")
        types = getattr(inner, "layer_types", None) or ["full_attention"] * len(self.blocks)
        window = getattr(inner, "window_size", None) or getattr(inner, "sliding_window", None)
        self.windows = [window if t == "sliding_attention" else None for t in types]
        self._weights_dir: Path | None = None

    def stream_blocks(self, weights_dir: Path) -> bool:
        """Keep the blocks' weights on disk from now on, reading a block when it is used.

        Only when the files hold exactly the loaded blocks' weights (a source that was
        dequantized or cast after loading does not, and stays in memory). Returns whether
        streaming is on.
        """
        self._weights_dir = weights_dir
        fresh = self._lazy_weights()
        for k, block in enumerate(self.blocks):
            prefix = f"{self.block_path(k)}."
            for name, value in tree_flatten(block.parameters()):
                disk = fresh.get(prefix + name)
                if disk is None or disk.shape != value.shape or disk.dtype != value.dtype:
                    self._weights_dir = None
                    return False
        for k in range(len(self.blocks)):
            self.release(k)
        return True

    def _lazy_weights(self) -> dict[str, mx.array]:
        # A fresh mx.load each time: its arrays are unread until evaluated, and a reused
        # dict would keep every block it had ever read alive.
        weights: dict[str, mx.array] = {}
        for f in sorted(self._weights_dir.glob("model*.safetensors")):
            weights.update(mx.load(str(f)))
        sanitize = getattr(self.model, "sanitize", None)
        return sanitize(weights) if sanitize is not None else weights

    def release(self, k: int) -> None:
        """Free block ``k``'s weights (re-read from disk on next use) when streaming."""
        if self._weights_dir is None:
            return
        prefix = f"{self.block_path(k)}."
        fresh = self._lazy_weights()
        self.blocks[k].update(tree_unflatten(
            [(n[len(prefix):], w) for n, w in fresh.items() if n.startswith(prefix)]))

    def block_path(self, k: int) -> str:
        return f"model.layers.{k}"

    def head_weight(self) -> mx.array:
        return self.head.weight

    def mask(self, k: int, h: mx.array):
        return create_attention_mask(h, None, window_size=self.windows[k])

    def embed_tokens(self, tokens: mx.array) -> mx.array:
        return self.embed.weight[tokens].astype(mx.float32)

    def forward_hidden(self, hs: list[mx.array], weight_fn: WeightFn | None = None,
                       start: int = 0, stop: int | None = None) -> list[mx.array]:
        """Run hidden states ``hs`` (one [1, T, d] per sequence) through blocks [start, stop).

        Block-major: each block's weights are transformed once for all sequences
        (a quantize-dequantize costs far more than running one sequence on CPU), and
        a streamed block is read once per pass.
        """
        hs = list(hs)
        for k in range(start, len(self.blocks) if stop is None else stop):
            with swapped(self.blocks[k], self.block_path(k), weight_fn):
                hs = [self.blocks[k](h, self.mask(k, h)) for h in hs]
                mx.eval(hs)
            self.release(k)
        return hs

    def head_matrix(self, weight_fn: WeightFn | None = None) -> mx.array:
        """The output projection [vocab, d] in its stored dtype, after ``weight_fn``."""
        w = self.head_weight()
        return w if weight_fn is None else weight_fn(self.head_path, w)

    def logits_chunks(self, h_last: mx.array, head: mx.array,
                      chunk: int = 64) -> Iterator[mx.array]:
        """float32 logits [t, vocab] of the final hidden state with ``head`` (see
        head_matrix), ``chunk`` tokens at a time (all of [512, 49152] would be 100 MB, and a
        probe holds several such arrays at once);
        the head is cast to float32 a vocabulary slice at a time, never whole."""
        hn = self.norm(h_last.reshape(-1, h_last.shape[-1]))
        for i in range(0, hn.shape[0], chunk):
            x = hn[i:i + chunk]
            pieces = []
            for r in range(0, head.shape[0], VOCAB_CHUNK):
                pieces.append(x @ head[r:r + VOCAB_CHUNK].astype(mx.float32).T)
                mx.eval(pieces[-1])  # one float32 slice of the head alive at a time
            yield mx.concatenate(pieces, axis=-1)


@contextmanager
def swapped(module: nn.Module, prefix: str, weight_fn: WeightFn | None) -> Iterator[None]:
    """Within the block, compute with ``weight_fn(path, weight)`` in place of each weight."""
    if weight_fn is None:
        yield
        return
    originals = []
    new = []
    for name, value in tree_flatten(module.parameters()):
        if not name.endswith("weight"):
            continue
        path = f"{prefix}.{name[: -len('.weight')]}"
        replaced = weight_fn(path, value)
        if replaced is not value:
            originals.append((name, value))
            new.append((name, replaced))
    module.update(tree_unflatten(new))
    try:
        yield
    finally:
        module.update(tree_unflatten(originals))
