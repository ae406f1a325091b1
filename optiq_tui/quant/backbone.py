"""The model's own forward pass, run block by block: the measurement forward.

mlx-lm's ``Model.__call__`` runs the whole graph at the weights' dtype; on a
CPU float16 matmuls are ~30x slower than float32 with OpenBLAS, and the
sensitivity pass needs the hidden state entering each block and one block's
weights swapped at a time. So the model's ``__call__`` is split at its blocks,
without re-implementing anything around them (each architecture has its own
embedding scales, masks, soft-capping, multipliers):

- embed: ``model(tokens)`` with every block replaced by a tap that records the
  arguments the model passes it (mask, cache, per-layer extras) and the hidden
  state entering the first block; the last tap stops the call.
- blocks: ``block(h, *recorded args)`` block-major, with ``h`` in float32 so
  every matmul promotes to float32 one layer at a time (no float32 copy of
  the model).
- tail: ``model(tokens)`` with taps that pass their input through and make the
  last block return an injected hidden state: final norm, soft-capping and
  head are the model's own. Position-wise, so it runs a chunk at a time.

:meth:`Backbone.check` compares this with ``model(tokens)`` before anything is
measured. With :meth:`Backbone.stream_blocks` the blocks' weights stay on disk:
a block is read when a pass reaches it and dropped after, so a measurement
holds the embedding / head and one block.
"""

from __future__ import annotations

import inspect
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_unflatten

from optiq_tui.progress import OptiqError
from optiq_tui.quant.layers import BLOCK_LISTS, ROW_SLICE, get_module

# Bump whenever the measurement forward changes what it computes: the sensitivity cache
# key includes it, so figures from an older pass (v1 re-implemented the forward and was
# wrong on Gemma) are never reused.
MEASUREMENT_VERSION = "model-own-forward-v2"

# (module path, weight) -> weight to compute with; None means the weights as they are.
WeightFn = Callable[[str, mx.array], mx.array]

# Positions per tail call: [128, vocab] float32 logits (25 MB for a 49k vocabulary); fewer
# calls amortize the float32 promotion of a half-precision head (2.4x faster than 64).
TOKEN_CHUNK = 128
# Tokens the guard compares the measurement forward with the model's own on: the own
# forward runs in the stored half precision (slow on a CPU: 1.1 s for 16 tokens of the demo).
GUARD_TOKENS = 16


# Key under which a tap records the name the hidden state was passed by, if not by position.
_HIDDEN = "__optiq_hidden_name__"


class _Stop(Exception):
    """Ends a capture call of the model once the last block's arguments are recorded."""


def split_hidden(block: nn.Module, args: tuple, kwargs: dict) -> tuple[Any, tuple, dict, str | None]:
    """(hidden state, other args, other kwargs, the name it was passed by or None) of a call
    of ``block``: the first positional argument, or, passed by name (gptj:
    ``block(inputs=h, mask=...)``), the block's first parameter."""
    if args:
        return args[0], args[1:], kwargs, None
    name = next(iter(inspect.signature(block.__call__).parameters))
    kwargs = dict(kwargs)
    return kwargs.pop(name), (), kwargs, name


class _Tap:
    """Stands in for block ``k`` during a call of the model (attribute reads go to the block)."""

    def __init__(self, bb: "Backbone", k: int, block: nn.Module) -> None:
        self._bb, self._k, self._block = bb, k, block

    def __call__(self, *args: Any, **kwargs: Any) -> mx.array:
        h, args, kwargs, name = split_hidden(self._block, args, kwargs)
        return self._bb._on_block(self._k, h, args, kwargs if name is None else {**kwargs, _HIDDEN: name})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._block, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        # isinstance(layer, FullAttentionDecoderLayer) picks olmo_hybrid's mask per block.
        return type(self._block)


def find_blocks(model: nn.Module) -> tuple[str, list] | None:
    """(path, list) of the model's blocks: the shallowest list of modules named like
    ``layers`` (model.layers, model.model.layers, model.language_model.model.layers, ...)."""
    best = None
    for path, module in model.named_modules():
        for name in BLOCK_LISTS:
            value = module.get(name) if isinstance(module, dict) else None
            if isinstance(value, list) and value and all(isinstance(b, nn.Module) for b in value):
                full = f"{path}.{name}" if path else name
                if best is None or full.count(".") < best[0].count("."):
                    best = (full, value)
    return best


class HeadTap:
    """Stands in for the head module (or a tied embedding acting as one) in every tail call, so
    that no float32 copy of the head is ever alive (a half-precision head times float32 hidden
    states would be cast whole). ``mode``:

    - "compute": logits a vocabulary slice at a time from the stored weight, outside any
      gradient (each slice's float32 cast is freed before the next).
    - "record": the same, keeping input and logits (the Fisher's chain rule by hand).
    - "replay": ``probe``, the kept logits as the argument of a gradient (d loss / d logits).
    - "input": keeps its input and returns zeros (the input's vjp through the model's code).
    """

    def __init__(self, module: Any) -> None:
        self._module = module
        self.mode = "compute"
        self.x: mx.array | None = None
        self.out: mx.array | None = None
        self.probe: mx.array | None = None
        self.calls = 0

    def __call__(self, x: mx.array) -> mx.array:
        # A tied embedding is still called for its lookup (the tail's dummy tokens).
        if isinstance(self._module, (nn.Embedding, nn.QuantizedEmbedding)):
            return self._module(x)
        return self._head(x)

    def as_linear(self, x: mx.array) -> mx.array:
        return self._head(x)

    def _head(self, x: mx.array) -> mx.array:
        self.calls += 1
        if self.mode == "replay":
            return self.probe
        if "scales" in self._module and self.mode == "compute":
            # A quantized head's weight is packed: its own code (no float32 cast to avoid).
            return self._module.as_linear(x) if hasattr(self._module, "as_linear") else self._module(x)
        w = self._module.weight
        if self.mode == "input":
            self.x = x
            return mx.zeros((*x.shape[:-1], w.shape[0]), x.dtype)
        out = mx.concatenate(by_slice(w, lambda r, ws: x @ ws.T), axis=-1)
        if "bias" in self._module:
            out = out + self._module.bias
        if self.mode == "record":
            self.x, self.out = x, out
        return out

    def input_grad(self, g: mx.array) -> mx.array:
        """d loss / d input from d loss / d logits ``g``, a vocabulary slice at a time."""
        return sum(by_slice(self._module.weight, lambda r, ws: g[..., r:r + ROW_SLICE] @ ws))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)


def by_slice(w: mx.array, fn: Callable[[int, mx.array], mx.array]) -> list[mx.array]:
    """``fn(r, float32 rows r:r + ROW_SLICE of w)`` for each slice, evaluated one by one:
    one lazy graph would cast every slice up front (a float32 copy of the head)."""
    outs = []
    for r in range(0, w.shape[0], ROW_SLICE):
        outs.append(fn(r, w[r:r + ROW_SLICE].astype(mx.float32)))
        mx.eval(outs[-1])
    return outs


@contextmanager
def standing_in(model: Any, taps: dict[str, Any]) -> Iterator[None]:
    """Within, the module at each path is replaced by its tap (path -> tap)."""
    originals = {}
    for path, tap in taps.items():
        parent, _, name = path.rpartition(".")
        owner = get_module(model, parent) if parent else model
        if isinstance(owner, list):  # a module in a list (longcat_flash_ngram's embeddings)
            name = int(name)
        originals[path] = (owner, name, owner[name])
        owner[name] = tap
    try:
        yield
    finally:
        for owner, name, module in originals.values():
            owner[name] = module


class Backbone:
    """An mlx-lm model's ``__call__`` split at its blocks (see the module docstring)."""

    def __init__(self, model: nn.Module, config: dict, hint: str = "use --uniform B") -> None:
        """``hint``: what a refusal tells the user to do instead (an optiq quant: a uniform one)."""
        self.model = model
        self.model_type = str(config.get("model_type", "?"))
        self.hint = hint
        found = find_blocks(model)
        if found is None:
            raise OptiqError(
                f"model type {self.model_type!r} has no list of blocks the OptiQ measurement can "
                f"run one at a time; {hint}")
        self.blocks_path, self._list = found
        self.blocks: list[nn.Module] = list(self._list)
        inside = self.blocks_path + "."
        outside = [(p, m) for p, m in model.named_modules()
                   if p and not p.startswith(inside) and "weight" in m and hasattr(m, "to_quantized")]
        self.embed_paths = [p for p, m in outside if isinstance(m, (nn.Embedding, nn.QuantizedEmbedding))]
        heads = [p for p, m in outside if p not in self.embed_paths]
        self.tied = not heads
        # The weights the tail multiplies with: the head, or the embedding acting as one.
        self.tail_paths = heads or list(self.embed_paths)
        self.outside_paths = list(dict.fromkeys(self.embed_paths + heads))
        # Stand-ins for the tail's head modules (see HeadTap), installed by ``tail``.
        self.heads = {p: HeadTap(get_module(model, p)) for p in self.tail_paths}
        self._args: dict[int, list[tuple[tuple, dict]]] = {}  # length -> per block (args, kwargs)
        self._mode = ""
        self._seen: list[tuple[tuple, dict]] = []
        self._h0: mx.array | None = None
        self._inject: mx.array | None = None
        self._weights_dir: Path | None = None
        self._sanitize = False

    # -- the model's own call, split at the blocks ------------------------------------

    def _on_block(self, k: int, h: mx.array, args: tuple, kwargs: dict) -> mx.array:
        if self._mode == "capture":
            if k != len(self._seen):
                raise OptiqError(f"model type {self.model_type!r} does not call its blocks once each "
                                 f"in order; it cannot be measured block by block; {self.hint}")
            if k == 0:
                self._h0 = h
            self._seen.append((args, kwargs))
            if k == len(self.blocks) - 1:
                raise _Stop
            return h
        return self._inject if k == len(self.blocks) - 1 else h

    def _call(self, tokens: mx.array) -> mx.array:
        """The model's own call with the taps in place."""
        try:
            return self.model(tokens)
        except (ValueError, TypeError, AttributeError) as exc:
            # Blocks whose output is more than the hidden state (hunyuan's shared keys and
            # values, rwkv7's recurrent state, afm7's reused cache): taps cannot stand in.
            raise OptiqError(
                f"model type {self.model_type!r} passes more than a hidden state between its "
                f"blocks ({type(exc).__name__}: {exc}); it cannot be measured block by "
                f"block; {self.hint}") from exc

    @contextmanager
    def _tapped(self, mode: str) -> Iterator[None]:
        self._mode = mode
        self._list[:] = [_Tap(self, k, b) for k, b in enumerate(self.blocks)]
        try:
            yield
        finally:
            self._list[:] = self.blocks
            self._mode = ""

    @contextmanager
    def weights_outside(self, weights: dict[str, mx.array] | None) -> Iterator[None]:
        """Within, the modules outside the blocks compute with ``weights`` (path -> weight)."""
        originals = {}
        for path, w in (weights or {}).items():
            module = get_module(self.model, path)
            originals[path] = module.weight
            module.weight = w
        try:
            yield
        finally:
            for path, w in originals.items():
                get_module(self.model, path).weight = w

    def outside_weights(self, weight_fn: WeightFn | None) -> dict[str, mx.array]:
        """The embedding / head weights ``weight_fn`` changes, transformed once and evaluated."""
        out = {}
        for path in self.outside_paths if weight_fn is not None else ():
            w = get_module(self.model, path).weight
            new = weight_fn(path, w)
            if new is not w:
                out[path] = new
        mx.eval(list(out.values()))
        return out

    def embed(self, tokens: list[int] | mx.array,
              weights: dict[str, mx.array] | None = None) -> mx.array:
        """The float32 hidden state [1, T, d] entering the first block, by the model's own code;
        records the arguments the model passes each block for sequences of this length."""
        tokens = mx.array(tokens).reshape(1, -1)
        self._seen = []
        with self.weights_outside(weights), self._tapped("capture"):
            try:
                self._call(tokens)
            except _Stop:
                pass
        if len(self._seen) != len(self.blocks):
            raise OptiqError(f"model type {self.model_type!r} did not call all its blocks; "
                             f"it cannot be measured block by block; {self.hint}")
        mx.eval([a for _, a in tree_flatten(self._seen) if isinstance(a, mx.array)])
        self._args[tokens.shape[1]] = self._seen
        return self._h0.astype(mx.float32)

    def run_block(self, k: int, h: mx.array) -> mx.array:
        """Block ``k`` on ``h`` [1, T, d] with the arguments the model gave it (mask, ...)."""
        args, kwargs = self._args[h.shape[1]][k]
        if _HIDDEN in kwargs:
            kwargs = dict(kwargs)
            return self.blocks[k](*args, **{kwargs.pop(_HIDDEN): h}, **kwargs)
        return self.blocks[k](h, *args, **kwargs)

    def tail(self, h: mx.array) -> mx.array:
        """Logits [1, t, vocab] of the last block's output ``h`` [1, t, d], by the model's own code."""
        self._inject = h
        try:
            with self._tapped("inject"), standing_in(self.model, self.heads):
                return self._call(mx.zeros((1, h.shape[1]), mx.int32))
        finally:
            self._inject = None

    def logits_chunks(self, h_last: mx.array, weights: dict[str, mx.array] | None = None,
                      chunk: int = TOKEN_CHUNK) -> Iterator[mx.array]:
        """float32 logits [t, vocab] of the final hidden state, ``chunk`` positions at a time
        (all of [512, 49152] would be 100 MB, and a probe holds several such arrays)."""
        h = h_last.reshape(1, -1, h_last.shape[-1])
        for i in range(0, h.shape[1], chunk):
            with self.weights_outside(weights):
                out = self.tail(h[:, i:i + chunk])[0]
            mx.eval(out)
            yield out

    def forward_hidden(self, hs: list[mx.array], weight_fn: WeightFn | None = None,
                       start: int = 0, stop: int | None = None) -> list[mx.array]:
        """Run hidden states ``hs`` (one [1, T, d] per sequence) through blocks [start, stop).

        Block-major: each block's weights are transformed once for all sequences
        (a quantize-dequantize costs far more than running one sequence on CPU), and
        a streamed block is read once per pass.
        """
        hs = list(hs)
        for k in range(start, len(self.blocks) if stop is None else stop):
            with swapped(self.blocks[k], self.block_path(k), weight_fn), float32(self.blocks[k]):
                hs = [self.run_block(k, h) for h in hs]
                mx.eval(hs)
            self.release(k)
        return hs

    def block_path(self, k: int) -> str:
        return f"{self.blocks_path}.{k}"

    # -- the guard ----------------------------------------------------------------------

    def check(self, tokens: list[int], other: list[int]) -> None:
        """Stop unless the measurement forward gives ``model(tokens)``'s logits. The blocks'
        arguments are recorded on ``other``: they must depend on the length alone."""
        n = min(len(tokens), len(other), GUARD_TOKENS)
        h = self.embed(tokens[:n])
        self.embed(other[:n])
        ours = mx.concatenate(list(self.logits_chunks(self.forward_hidden([h])[0])))
        x = mx.array(tokens[:n])[None]
        try:
            own = self.model(x)
            mx.eval(own)
        except RuntimeError:
            # MLX's CPU kernels lack some half-precision ops (gather_mm of MoE experts): the
            # model's own code on float32 copies of its blocks, for this guard only.
            with ExitStack() as stack:
                for block in self.blocks:
                    stack.enter_context(float32(block))
                own = self.model(x)
                mx.eval(own)
        for k in range(len(self.blocks)):
            self.release(k)  # the whole-model call read every streamed block
        if not isinstance(own, mx.array) or own.shape[1:] != (n, ours.shape[-1]):
            raise OptiqError(f"model type {self.model_type!r}: its forward does not return "
                             f"logits per position; it cannot be measured; {self.hint}")
        half = any(v.dtype in (mx.float16, mx.bfloat16)
                   for _, v in tree_flatten(self.model.parameters()))
        own = own[0].astype(mx.float32)
        lp_own, lp = (x - mx.logsumexp(x, axis=-1, keepdims=True) for x in (own, ours))
        kl = mx.mean(mx.sum(mx.exp(lp_own) * (lp_own - lp), axis=-1)).item()
        # float32 weights: the same arithmetic up to order; half-precision weights: the
        # model's own forward rounds every activation, ours keeps them in float32.
        limit = 2e-2 if half else 1e-4
        if not (kl <= limit):  # also catches NaN
            raise OptiqError(
                f"model type {self.model_type!r}: the block-by-block measurement forward does "
                f"not match the model's own (KL {kl:.3g} on {n} tokens); it cannot be measured "
                f"this way; {self.hint}")

    # -- streaming the blocks' weights from disk ------------------------------------------

    def stream_blocks(self, weights_dir: Path) -> bool:
        """Keep the blocks' weights on disk from now on, reading a block when it is used.

        Only when the files hold exactly the loaded blocks' weights (a source that was
        dequantized or cast after loading does not, and stays in memory). Returns whether
        streaming is on.
        """
        self._weights_dir = weights_dir
        names = {f"{self.block_path(k)}.{n}": v for k, b in enumerate(self.blocks)
                 for n, v in tree_flatten(b.parameters())}
        # Files written by mlx-lm already hold the model's own names: its sanitize must not
        # run on them again (gemma3_text's pops lm_head twice); other files need it once.
        self._sanitize = not set(names) <= set(self._file_weights())
        try:
            fresh = self._lazy_weights()
        except Exception:  # noqa: BLE001 - a sanitize that cannot map these files: no streaming
            fresh = {}
        for name, value in names.items():
            disk = fresh.get(name)
            if disk is None or disk.shape != value.shape or disk.dtype != value.dtype:
                self._weights_dir = None
                return False
        for k in range(len(self.blocks)):
            self.release(k)
        return True

    def _file_weights(self) -> dict[str, mx.array]:
        weights: dict[str, mx.array] = {}
        for f in sorted(self._weights_dir.glob("model*.safetensors")):
            weights.update(mx.load(str(f)))
        return weights

    def _lazy_weights(self) -> dict[str, mx.array]:
        # A fresh mx.load each time: its arrays are unread until evaluated, and a reused
        # dict would keep every block it had ever read alive.
        weights = self._file_weights()
        return self.model.sanitize(weights) if self._sanitize else weights

    def release(self, k: int) -> None:
        """Free block ``k``'s weights (re-read from disk on next use) when streaming."""
        if self._weights_dir is None:
            return
        prefix = f"{self.block_path(k)}."
        fresh = self._lazy_weights()
        self.blocks[k].update(tree_unflatten(
            [(n[len(prefix):], w) for n, w in fresh.items() if n.startswith(prefix)]))


@contextmanager
def float32(module: nn.Module) -> Iterator[None]:
    """Within, ``module`` computes with float32 copies of its half-precision weights: one
    block's copy at a time, cast once for all sequences (MLX's CPU gather_mm of MoE experts
    runs only in float32, and a float32 matmul with OpenBLAS is ~30x a float16 one)."""
    originals = [(n, v) for n, v in tree_flatten(module.parameters())
                 if v.dtype in (mx.float16, mx.bfloat16)]
    module.update(tree_unflatten([(n, v.astype(mx.float32)) for n, v in originals]))
    try:
        yield
    finally:
        module.update(tree_unflatten(originals))


@contextmanager
def swapped(module: nn.Module, prefix: str, weight_fn: WeightFn | None) -> Iterator[None]:
    """Within the block, compute with ``weight_fn(path, weight)`` in place of each weight."""
    if weight_fn is None:
        yield
        return
    originals = []
    new = []
    for name, value in tree_flatten(module.parameters()):
        if not name.endswith(".weight"):  # a module's weight; not a bare "input_gate_weight"
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
