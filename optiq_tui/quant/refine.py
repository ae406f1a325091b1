"""Refinement, DWQ-style: tune a written quant's scales and biases against the source's logits.

As ``mlx_lm.quant.dwq``: the targets are the source's top-k logits on the calibration
sequences, the loss mlx-lm's ``kl_div_loss`` on those k entries, the trainable parameters
the scales and biases of affine layers under 8 bits, the optimizer Adam with bias
correction. What differs, and why:

- ``dwq_quantize`` trains through ``QuantizedLinear``; on a CPU the quantized matmul and its
  gradient ran ~20x slower than a dense matmul of the dequantized weight (576x1536 layer,
  512 tokens: 0.65 s against 0.03 s, same gradients), so within refinement every quantized
  layer computes ``dequantize(codes, scales, biases) @ x`` (``_Dense``), in float32; MoE
  expert stacks (QuantizedSwitchLinear) likewise, through ``gather_mm``.
- It runs a fixed number of iterations; here it is time-boxed, cancellable between steps,
  and keeps the state with the lowest full-vocabulary KL on held-back calibration
  sequences (the starting state included), so it never returns a worse quant than it got.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim

from optiq_tui.measures.metrics import kl_from_logprobs, log_softmax
from optiq_tui.progress import Log, Progress, ProgressFn, check_cancel, no_progress
from optiq_tui.quant.backbone import float32, standing_in

TOP_K = 1024  # as mlx-lm's compute_dwq_targets
# Higher than dwq's 1e-6 default, which is for thousands of steps; here a few dozen (measured
# on the demo, see quant-notes.md).
LEARNING_RATE = 3e-5
EVAL_EVERY = 4  # steps between held-back checks (a check costs about one step's forward)


@dataclass(frozen=True)
class Targets:
    """The source's outputs on calibration: top-k logits to train on, full log-probs to check on."""

    train: list[tuple[mx.array, mx.array, mx.array]]  # (tokens, top-k logits, their ids)
    held_back: list[tuple[mx.array, mx.array]]  # (tokens, log-probs over the whole vocabulary)


@dataclass(frozen=True)
class RefineResult:
    """Held-back KL before and after (the kept state), and what the run did."""

    kl_before: float
    kl_after: float
    steps: int
    best_step: int
    seconds: float
    stopped: str  # "time" | "steps"
    layers: int  # layers whose scales and biases were tuned

    def to_dict(self) -> dict:
        return {"kl_before": round(self.kl_before, 5), "kl_after": round(self.kl_after, 5),
                "gain": round(self.kl_after / self.kl_before, 4) if self.kl_before else None,
                "steps": self.steps, "best_step": self.best_step,
                "seconds": round(self.seconds, 1), "stopped": self.stopped, "layers": self.layers}


def source_targets(model: nn.Module, sequences: Sequence[Sequence[int]],
                   held_back: Sequence[Sequence[int]], *, top_k: int = TOP_K,
                   cancel: threading.Event | None = None) -> Targets:
    """The (unquantized) model's targets; run before the model is quantized or compensated.

    Top-k, as dwq's stored targets: full-vocabulary logits of every sequence would take
    seq_len x vocab x 4 bytes each (100 MB for the demo at 512 tokens)."""
    if not held_back:  # too little calibration text to hold any back: check on what it trains on
        held_back = sequences[-1:]
    train, back = [], []
    with float32(model):
        for seq in sequences:
            check_cancel(cancel)
            tokens = mx.array([list(seq)])
            logits = model(tokens)
            k = min(top_k, logits.shape[-1])
            ids = mx.argpartition(logits, kth=-k, axis=-1)[..., -k:]
            picked = mx.take_along_axis(logits, ids, axis=-1)
            mx.eval(picked, ids)
            train.append((tokens, picked, ids))
        for seq in held_back:
            check_cancel(cancel)
            tokens = mx.array([list(seq)])
            logprobs = log_softmax(model(tokens))
            mx.eval(logprobs)
            back.append((tokens, logprobs))
    return Targets(train, back)


class _Dense(nn.Module):
    """A quantized layer computing with its dequantized weight (a dense float32 matmul)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.packed = layer.weight
        self.scales = layer.scales.astype(mx.float32)
        self.biases = layer.biases.astype(mx.float32)
        if "bias" in layer:
            self.bias = layer.bias.astype(mx.float32)
        # Scales round to the dtype they are written in, so what is checked is what ships.
        object.__setattr__(self, "spec", (layer.group_size, layer.bits, layer.scales.dtype,
                                          isinstance(layer, nn.QuantizedEmbedding)))

    def weight_of(self, packed: mx.array, scales: mx.array, biases: mx.array) -> mx.array:
        group_size, bits, dtype, _ = self.spec
        return mx.dequantize(packed, scales.astype(dtype).astype(mx.float32),
                             biases.astype(dtype).astype(mx.float32),
                             group_size=group_size, bits=bits)

    def __call__(self, x: mx.array, indices: mx.array | None = None,
                 sorted_indices: bool = False) -> mx.array:
        if indices is not None:  # a stack of experts (QuantizedSwitchLinear), as SwitchLinear computes
            w = self.weight_of(self.packed, self.scales, self.biases).swapaxes(-1, -2)
            y = mx.gather_mm(x, w, rhs_indices=indices, sorted_indices=sorted_indices)
            return y + mx.expand_dims(self.bias[indices], -2) if "bias" in self else y
        if self.spec[3]:  # an embedding: look up rows
            return self.weight_of(self.packed[x], self.scales[x], self.biases[x])
        return self.as_linear(x)

    def as_linear(self, x: mx.array) -> mx.array:
        y = x @ self.weight_of(self.packed, self.scales, self.biases).T
        return y + self.bias if "bias" in self else y


def _quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    from mlx_lm.models.switch_layers import QuantizedSwitchLinear

    kinds = (nn.QuantizedLinear, nn.QuantizedEmbedding, QuantizedSwitchLinear)
    return {path: m for path, m in model.named_modules()
            if isinstance(m, kinds) and m.mode == "affine" and m.get("biases") is not None}


def _trainable(layer: nn.Module) -> bool:
    # dwq_quantize's choice: affine layers under 8 bits (8-bit rounding leaves little to tune).
    return layer.bits < 8


def refine(model: nn.Module, targets: Targets, *, seconds: float | None = None,
           max_steps: int | None = None, learning_rate: float = LEARNING_RATE,
           temperature: float = 1.0, eval_every: int = EVAL_EVERY,
           progress: ProgressFn = no_progress, cancel: threading.Event | None = None,
           clock: Callable[[], float] = time.perf_counter) -> RefineResult:
    """Tune the quantized ``model``'s scales and biases in place until ``seconds`` or
    ``max_steps`` (whichever first), keeping the state best on the held-back targets."""
    if seconds is None and max_steps is None:
        raise ValueError("refine needs a time box or a step limit")
    from mlx_lm.tuner.losses import kl_div_loss

    layers = _quantized_layers(model)
    views = {path: _Dense(layer) for path, layer in layers.items()}
    tuned = [p for p, layer in layers.items() if _trainable(layer)]
    if any("scales" in m and p not in layers for p, m in model.named_modules()):
        progress(Log("refine: only affine layers are tuned; others keep their scales", "warning"))
    start = clock()

    def use(params: dict) -> None:
        for p in tuned:
            views[p].scales, views[p].biases = params[p]["scales"], params[p]["biases"]

    # As dwq's loss_fn: the parameters in, the model updated with them, KL on the top-k ids.
    def loss_fn(params: dict, tokens: mx.array, logits_k: mx.array, ids: mx.array) -> mx.array:
        use(params)
        student = mx.take_along_axis(model(tokens), ids, axis=-1)
        return kl_div_loss(student / temperature, logits_k / temperature).mean()

    def held_back_kl() -> float:
        total, n = 0.0, 0
        for tokens, ref in targets.held_back:
            kl = kl_from_logprobs(ref, log_softmax(model(tokens)))
            total += kl.sum().item()
            n += kl.size
        return total / n

    with float32(model), standing_in(model, views):
        params = {p: {"scales": views[p].scales, "biases": views[p].biases} for p in tuned}
        step_fn = mx.value_and_grad(loss_fn)
        opt = optim.Adam(learning_rate=learning_rate, bias_correction=True)
        before = held_back_kl()
        best, best_params, best_step = before, params, 0
        eval_s = clock() - start
        progress(Log(f"refine: {len(tuned)} layers' scales and biases, held-back KL {before:.4f}"))
        step, step_s, stopped, checked = 0, 0.0, "steps", True
        while max_steps is None or step < max_steps:
            check_cancel(cancel)
            # Stop while a step, and the check that must follow it, still fit the box.
            if seconds is not None and clock() - start + step_s + eval_s > seconds:
                stopped = "time"
                break
            t0 = clock()
            tokens, logits_k, ids = targets.train[step % len(targets.train)]
            loss, grads = step_fn(params, tokens, logits_k, ids)
            params = opt.apply_gradients(grads, params)
            mx.eval(loss, params, opt.state)
            use(params)
            step += 1
            step_s = clock() - t0
            message = f"step {step}: loss {loss.item():.4f}"
            checked = step % eval_every == 0
            if checked:
                check_cancel(cancel)
                t1 = clock()
                kl = held_back_kl()
                eval_s = clock() - t1
                if kl < best:
                    best, best_params, best_step = kl, params, step
                message += f" · held-back KL {kl:.4f} (best {best:.4f}, start {before:.4f})"
            progress(Progress("refine", clock() - start if seconds else step,
                              seconds if seconds else max_steps, message,
                              "s" if seconds else "steps"))
        if not checked:
            kl = held_back_kl()
            if kl < best:
                best, best_params, best_step = kl, params, step
    if best_step:  # the starting state was best: the layers keep their own arrays untouched
        for path in tuned:
            layer = layers[path]
            layer.scales = best_params[path]["scales"].astype(layer.scales.dtype)
            layer.biases = best_params[path]["biases"].astype(layer.biases.dtype)
        mx.eval(model.parameters())
    result = RefineResult(before, best, step, best_step, clock() - start, stopped, len(tuned))
    progress(Log(f"refine: held-back KL {before:.4f} → {best:.4f} after {step} steps "
                 f"(kept step {best_step}) in {result.seconds:.0f} s"))
    return result


__all__ = ["RefineResult", "Targets", "refine", "source_targets"]
