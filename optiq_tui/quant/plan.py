"""Memory planner: "fit in X GB with a context of C tokens" → the target bits per weight.

Peak memory while generating = weights + KV cache at C tokens + the working set
of one prefill chunk. Weights are counted as the allocation counts them
(quant/layers.py); the KV cache as mlx-lm's caches hold it (buffers grown in
steps of 256 tokens, quantized KV in groups of 64 with a scale and a bias,
sliding-window layers bounded by their window); the working set from the
attention scores and MLP activations of one chunk, fitted to MLX's measured
peak (benchmarks/bench_plan.py).
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from optiq_tui.progress import OptiqError
from optiq_tui.sizes import human_bytes, parse_size
from optiq_tui.library.model_files import KV_BITS, KV_GROUP

KV_STEP = 256  # mlx-lm's KVCache / RotatingKVCache grow their buffers by this many tokens
MIN_BPW_BITS = 2  # the lowest width mlx packs
# Working set beyond weights and KV, fitted to MLX's peak generating with the demo on this
# CPU at 2,048 and 8,192 tokens (bench_plan.py): one chunk's attention scores count about
# 1.1 times (scores, then softmax over them); none where Metal's fused attention runs
# unquantized KV (not measured here).
SCORE_COPIES = 1.1
# Live (tokens x intermediate) activations of one chunk at the peak: gate, up, their product.
MLP_COPIES = 3.0
# Allocator slack and small buffers (sampler, one token's logits, masks): the fit's intercept.
RUNTIME_BYTES = 9 << 20


@dataclass(frozen=True)
class LayerCache:
    """One layer's KV cache shape; ``window`` set for a sliding-window (rotating) cache."""

    kv_heads: int
    head_dim: int
    window: int | None = None


def _capacity(tokens: int, window: int | None) -> int:
    """Tokens a layer's buffers hold: mlx-lm grows them by KV_STEP; a rotating cache stops at its window."""
    cap = math.ceil(tokens / KV_STEP) * KV_STEP
    return cap if window is None else min(cap, window)


def kv_bytes_per_value(kv_bits: int | None, float_bytes: int) -> float:
    """Bytes of one cached key or value element: the float itself, or packed bits plus
    its share of a group's scale and bias (stored in the activations' dtype)."""
    if kv_bits is None:
        return float(float_bytes)
    return kv_bits / 8 + 2 * float_bytes / KV_GROUP


def kv_cache_bytes(layers: list[LayerCache], context: int, kv_bits: int | None = None,
                   float_bytes: int = 2) -> int:
    """Bytes of the KV cache holding ``context`` tokens (keys + values, batch 1).

    mlx-lm cannot quantize a rotating (sliding-window) cache, so those layers
    stay at ``float_bytes`` whatever ``kv_bits`` says.
    """
    total = 0.0
    for layer in layers:
        per = kv_bytes_per_value(None if layer.window else kv_bits, float_bytes)
        total += 2 * layer.kv_heads * layer.head_dim * _capacity(context, layer.window) * per
    return int(total)


@dataclass(frozen=True)
class Shape:
    """What the memory model needs to know about an architecture."""

    layers: list[LayerCache]
    heads: int
    hidden: int
    intermediate: int  # per token: the widest MLP (active experts x expert width for MoE)


def working_bytes(shape: Shape, context: int, prefill_step: int, float_bytes: int,
                  kv_bits: int | None, fused_attention: bool) -> int:
    """The transient peak of prefilling the last chunk of a ``context``-token prompt."""
    chunk = min(prefill_step, context)
    scores = 0.0
    if kv_bits is not None or not fused_attention:
        # mlx-lm's quantized attention (and MLX's CPU attention) materialise the scores.
        scores = SCORE_COPIES * shape.heads * chunk * _capacity(context, None) * float_bytes
    mlp = MLP_COPIES * chunk * shape.intermediate * float_bytes
    return int(scores + mlp + RUNTIME_BYTES)


@dataclass(frozen=True)
class Peak:
    weights: int
    kv_cache: int
    working: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.working


def fused_attention() -> bool:
    """Whether unquantized attention runs fused (Metal) rather than materialising scores."""
    import mlx.core as mx

    return mx.default_device() == mx.gpu and mx.metal.is_available()


def runtime_float_bytes(stored_bytes: int) -> int:
    """Bytes of a float at run time: the engine widens half precision to float32 on a
    Linux CPU for a quantized model (engine/loader.py cpu_float32)."""
    if stored_bytes == 2 and sys.platform.startswith("linux") and \
            os.environ.get("OPTIQ_CPU_FLOAT32", "1") != "0" and not fused_attention():
        return 4
    return stored_bytes


@dataclass(frozen=True)
class ModelMemory:
    """A source model's bit accounting (as the allocation does it) and its memory shape."""

    name: str
    shape: Shape
    total_params: int
    fixed_bits: float  # bits no width choice changes (norms, unquantizable layers)
    quantizable_params: int
    stored_float_bytes: int
    source_bpw: float

    def bpw_bounds(self, group_size: int) -> tuple[float, float]:
        """The smallest bpw reachable (every layer at 2 bits) and the source's own."""
        low = self.fixed_bits + self.quantizable_params * (
            MIN_BPW_BITS + 2 * 8 * self.stored_float_bytes / group_size)
        return low / self.total_params, self.source_bpw

    def weight_bytes(self, bpw: float, group_size: int, float_bytes: int) -> int:
        """Bytes of the weights at ``bpw`` once loaded: the bytes on disk, with every float
        (fixed parameters, scales and biases, layers kept unquantized) widened to ``float_bytes``."""
        stored = self.stored_float_bytes
        bpw = min(bpw, self.source_bpw)
        per_q = (bpw * self.total_params - self.fixed_bits) / max(self.quantizable_params, 1)
        top = 8 + 2 * 8 * stored / group_size  # every layer at 8 bits
        # Above 8-bit everywhere, the rest of the budget keeps layers unquantized.
        kept = min(max((per_q - top) / (8 * stored - top), 0.0), 1.0)
        floats = self.fixed_bits / 8 + self.quantizable_params * (
            kept * stored + (1 - kept) * 2 * stored / group_size)
        return int(bpw * self.total_params / 8 + floats * (float_bytes / stored - 1))


def _skeleton(config: dict[str, Any], dtype_name: str):
    """The architecture built from its config with lazy, never-evaluated random weights:
    the model's own modules and caches, no weights read, unquantized."""
    import mlx.core as mx
    from mlx_lm.utils import _get_classes

    config = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config")}
    model_class, args_class = _get_classes(config=config)
    model = model_class(args_class.from_dict(config))
    model.set_dtype({"F32": mx.float32, "BF16": mx.bfloat16}.get(dtype_name, mx.float16))
    return model


def _shape(model: Any, config: dict[str, Any]) -> Shape:
    from mlx_lm.models.cache import CacheList, KVCache, RotatingKVCache, make_prompt_cache

    cfg = config.get("text_config") or config
    heads = int(cfg.get("num_attention_heads") or 1)
    kv_heads = int(cfg.get("num_key_value_heads") or heads)
    hidden = int(cfg.get("hidden_size") or 0)
    head_dim = int(cfg.get("head_dim") or hidden // heads)
    experts = int(cfg.get("num_experts_per_tok") or cfg.get("experts_per_token") or 1)
    width = int(cfg.get("moe_intermediate_size") or cfg.get("intermediate_size") or 4 * hidden)
    layers: list[LayerCache] = []

    def add(cache: Any) -> None:
        if isinstance(cache, CacheList):
            for c in cache.caches:
                add(c)
        elif isinstance(cache, RotatingKVCache):
            layers.append(LayerCache(kv_heads, head_dim, cache.max_size))
        elif isinstance(cache, KVCache):
            layers.append(LayerCache(kv_heads, head_dim))
        # Other caches (recurrent state) are small and do not grow with the context.

    for cache in make_prompt_cache(model):
        add(cache)
    return Shape(layers, heads, hidden, width * max(experts, 1))


def model_memory(path: Path) -> ModelMemory:
    """Read a model folder's config and weight headers (no weights) into a ModelMemory."""
    from mlx_lm.utils import get_total_parameters

    from optiq_tui.library import model_files as mf
    from optiq_tui.quant.layers import bit_budget, quant_items

    try:
        config = mf.read_json(path / "config.json")
        table = mf.tensor_table(path)
    except (OSError, ValueError) as exc:
        raise OptiqError(f"{path.name}: cannot read the model ({exc})") from exc
    dtype = mf.main_float_dtype(table) or "F16"
    stored = 4 if dtype == "F32" else 2
    try:
        model = _skeleton(config, dtype)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise OptiqError(f"{path.name}: mlx-lm cannot build this architecture ({exc})") from exc
    tied = not any(p.endswith("lm_head") for p, _ in model.named_modules())
    items = quant_items(model, 64, tied)
    budget = bit_budget(model, items, 64)
    disk_bits = 8 * sum(n for _d, _s, n in table.values())
    params = mf.count_parameters(table, mf.layer_bits(config, mf.quantized_modules(table)))
    return ModelMemory(
        name=path.name,
        shape=_shape(model, config),
        total_params=get_total_parameters(model),
        fixed_bits=budget.fixed_bits,
        quantizable_params=sum(i.n_params for i in items if i.quantizable),
        stored_float_bytes=stored,
        source_bpw=disk_bits / max(params, 1),
    )


def predict_peak(mm: ModelMemory, bpw: float, context: int, *, kv_bits: int | None = None,
                 group_size: int = 64, prefill_step: int | None = None,
                 float_bytes: int | None = None, fused: bool | None = None) -> Peak:
    """MLX's peak memory while generating with ``mm`` quantized to ``bpw`` at ``context`` tokens."""
    from optiq_tui.engine.session import PREFILL_STEP

    fb = float_bytes or runtime_float_bytes(mm.stored_float_bytes)
    fused = fused_attention() if fused is None else fused
    return Peak(
        weights=mm.weight_bytes(bpw, group_size, fb),
        kv_cache=kv_cache_bytes(mm.shape.layers, context, kv_bits, fb),
        working=working_bytes(mm.shape, context, prefill_step or PREFILL_STEP, fb, kv_bits, fused),
    )


@dataclass(frozen=True)
class Plan:
    """The widest quant of a model that generates at ``context`` tokens within ``memory`` bytes."""

    model: str
    memory: int
    context: int
    kv_bits: int | None
    target_bpw: float
    unquantized_fits: bool
    peak: Peak
    float_bytes: int

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["peak"]["total"] = self.peak.total
        return d


def plan(mm: ModelMemory, memory: int, context: int, *, kv_bits: int | None = None,
         group_size: int = 64, **peak_kw: Any) -> Plan:
    """The target bpw whose predicted peak fits ``memory``; OptiqError when none does."""

    if context < 1:
        raise OptiqError("the context must be at least one token")
    if kv_bits is not None and kv_bits not in KV_BITS:
        raise OptiqError(f"--kv-bits {kv_bits} is not a width mlx can pack; use one of "
                         f"{', '.join(map(str, KV_BITS))}")
    low, high = mm.bpw_bounds(group_size)
    fb = peak_kw.pop("float_bytes", None) or runtime_float_bytes(mm.stored_float_bytes)

    def peak(bpw: float) -> Peak:
        return predict_peak(mm, bpw, context, kv_bits=kv_bits, group_size=group_size,
                            float_bytes=fb, **peak_kw)

    floor = peak(low)
    if floor.total > memory:
        raise OptiqError(
            f"{mm.name} does not fit in {human_bytes(memory)} with a context of {context} tokens even at "
            f"{low:.2f} bpw (every layer at 2 bits): needs ≥ {human_bytes(floor.total)}"
            + ("" if kv_bits else "; try --kv-bits 4 or a shorter context"))
    if peak(high).total <= memory:
        best = high
    else:
        lo, hi = low, high
        for _ in range(40):  # weight bytes grow linearly with bpw: bisection is exact enough
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if peak(mid).total <= memory else (lo, mid)
        best = math.floor(lo * 100) / 100
    result = peak(best)
    return Plan(mm.name, memory, context, kv_bits, round(best, 2), best >= high, result, fb)


def parse_memory(text: str) -> int:
    """Bytes from "16GB", "16 GiB", "512MB", or a bare "16" (GB), through the one size parser."""
    try:
        value = parse_size(text + "GB" if text.strip().replace(".", "", 1).isdigit() else text)
    except ValueError:
        value = 0
    if value <= 0:
        raise OptiqError(f"cannot read a memory size from {text!r}; write it like 16GB or 512MB")
    return value


def parse_context(text: str) -> int:
    """Tokens of context from "32768" or "32,768"; OptiqError saying what to write otherwise."""
    try:
        tokens = int(text.strip().replace(",", "").replace("_", ""))
    except ValueError:
        tokens = 0
    if tokens < 1:
        raise OptiqError(f"cannot read a context from {text!r}; give a number of tokens like 32768")
    return tokens
