"""Load a library model with mlx-lm, after checking that it fits in memory."""

from __future__ import annotations

import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optiq_tui.library import model_files as mf
from optiq_tui.library.model_files import KV_GROUP
from optiq_tui.progress import OptiqError, Progress, ProgressFn, check_cancel, no_progress
from optiq_tui.sizes import human_bytes

if TYPE_CHECKING:
    from optiq_tui.engine.formats import ChatFormat
    from optiq_tui.library.catalog import ModelInfo

# The KV cache is sized for this many tokens (or the model's context, if smaller):
# a long chat, not the 128k some configs allow.
KV_BUDGET_TOKENS = 8192
# Activations, logits and the allocator's slack on top of weights and KV.
MARGIN_FRACTION = 0.10
MARGIN_MIN_BYTES = 256 << 20
# Bytes evaluated between progress events / cancel checks while loading.
LOAD_CHUNK_BYTES = 64 << 20
DEFAULT_CONTEXT = 4096


@dataclass
class LoadedModel:
    """A model ready to generate; belongs to the thread that loaded it (MLX streams)."""

    info: "ModelInfo"
    model: Any
    tokenizer: Any
    format: "ChatFormat"
    config: dict
    context_length: int
    memory_bytes: int
    # Set when the weights were cast at load (see cpu_float32); empty otherwise.
    dtype_note: str = ""
    # The KV-cache width the quant was planned for; generation quantizes its cache to it.
    kv_bits: int | None = None


def as_info(model: "ModelInfo | str | os.PathLike[str]") -> "ModelInfo":
    """A ModelInfo for a library name, ``"demo"``, a folder path, or an info already."""
    from optiq_tui.library import catalog

    if isinstance(model, catalog.ModelInfo):
        return model
    return catalog.resolve(str(model))


def _config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise OptiqError(f"{path.name}: cannot read config.json ({exc})") from exc


def _weights_bytes(path: Path) -> int:
    from optiq_tui.library.model_files import weight_files

    return sum(f.stat().st_size for f in weight_files(path))


def cpu_float32(path: Path) -> bool:
    """Whether loading casts this model's half-precision arrays to float32 on a Linux CPU.

    There MLX's float16/bfloat16 kernels are slow. Unquantized: float32 goes to
    the BLAS, and with OpenBLAS an unquantized SmolLM2-135M decoded about 3x and
    prefilled 5-15x faster (measured here). Quantized: the packed weights stay
    as they are and only scales, biases, norms and any unquantized layers widen;
    a 4-bit SmolLM2-135M decoded 4.9 tokens/s so, and under 0.1 with float16
    scales (measured here), BLAS or not. Set ``OPTIQ_CPU_FLOAT32=0`` to keep
    half precision.
    """
    from optiq_tui.engine.blas import loaded_blas

    if os.environ.get("OPTIQ_CPU_FLOAT32", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    table = mf.tensor_table(path)
    if mf.main_float_dtype(table) not in ("F16", "BF16"):
        return False
    return bool(mf.quantized_modules(table)) or "OpenBLAS" in loaded_blas()


def _memory_weights_bytes(path: Path) -> int:
    """Bytes the weights take once loaded (twice the half-precision ones when cast to float32)."""
    if not cpu_float32(path):
        return _weights_bytes(path)

    return sum(n * 2 if dtype in ("F16", "BF16") else n for dtype, _s, n in mf.tensor_table(path).values())


def _kv_bytes_per_token(config: dict) -> int:
    cfg = config.get("text_config") or config
    layers = int(cfg.get("num_hidden_layers") or 0)
    heads = int(cfg.get("num_attention_heads") or 0)
    kv_heads = int(cfg.get("num_key_value_heads") or heads or 0)
    head_dim = int(cfg.get("head_dim") or (int(cfg.get("hidden_size") or 0) // heads if heads else 0))
    # keys + values, 2 bytes each (fp16/bf16 cache)
    return 2 * layers * kv_heads * head_dim * 2


def estimate_memory(info: "ModelInfo | str | os.PathLike[str]") -> int:
    """Bytes the model needs to chat: weights + KV cache for a long chat + a margin."""
    info = as_info(info)
    config = _config(Path(info.path))
    weights = _memory_weights_bytes(Path(info.path))
    tokens = min(info.context_length or DEFAULT_CONTEXT, KV_BUDGET_TOKENS)
    kv = _kv_bytes_per_token(config) * tokens
    return weights + kv + max(int(MARGIN_FRACTION * weights), MARGIN_MIN_BYTES)


def available_memory() -> tuple[int, str]:
    """Bytes a model may use now, and where the figure comes from.

    On Apple Silicon, Metal's recommended working set (what the GPU may wire);
    elsewhere the memory the OS reports available (Linux MemAvailable).
    """
    if sys.platform == "darwin":
        try:
            import mlx.core as mx

            if mx.metal.is_available():
                size = mx.device_info().get("max_recommended_working_set_size")
                if size:
                    return int(size), "Metal recommended working set"
        except (ImportError, AttributeError, RuntimeError):
            pass
    import psutil

    return int(psutil.virtual_memory().available), "available system memory"


def check_fits(info: "ModelInfo") -> int:
    """The estimate, or OptiqError when the model will not fit."""
    need = estimate_memory(info)
    have, source = available_memory()
    if need > have:
        raise OptiqError(
            f"{info.name} needs about {human_bytes(need)} to chat (weights {human_bytes(_memory_weights_bytes(Path(info.path)))} "
            f"plus KV cache and working memory) but only {human_bytes(have)} is free ({source}). "
            "Close other apps, or pick a smaller quant of this model."
        )
    return need


def load(
    info: "ModelInfo | str | os.PathLike[str]",
    *,
    progress: ProgressFn = no_progress,
    cancel: threading.Event | None = None,
) -> LoadedModel:
    """Load ``info`` with stock ``mlx_lm.load``, reporting progress by weight bytes.

    The model is opened lazily, then its weights are read in chunks so the
    caller sees progress and can cancel between chunks.
    """
    info = as_info(info)
    check_fits(info)
    progress(Progress("load", 0, None, "reading config and tokenizer"))
    check_cancel(cancel)

    import mlx.core as mx
    import mlx_lm
    from mlx.utils import tree_flatten

    from optiq_tui.engine.formats import select_format

    try:
        model, tokenizer, config = mlx_lm.load(str(info.path), lazy=True, return_config=True)
    except (OSError, ValueError, KeyError) as exc:
        raise OptiqError(f"mlx-lm could not load {info.name}: {exc}") from exc
    dtype_note = ""
    if mx.default_device() == mx.cpu and cpu_float32(Path(info.path)):
        model.set_dtype(mx.float32)  # lazy: the cast happens as the chunks below are read
        dtype_note = "float32 for the CPU's OpenBLAS"
    params = [a for _k, a in tree_flatten(model.parameters())]
    total = sum(a.nbytes for a in params)
    done, chunk, chunk_bytes = 0, [], 0
    for i, array in enumerate(params):
        chunk.append(array)
        chunk_bytes += array.nbytes
        if chunk_bytes >= LOAD_CHUNK_BYTES or i == len(params) - 1:
            check_cancel(cancel)
            mx.eval(chunk)
            done += chunk_bytes
            chunk, chunk_bytes = [], 0
            progress(Progress("load", done, total, "reading weights", unit="B"))
    model.eval()
    fmt = select_format(config.get("model_type"), tokenizer)
    return LoadedModel(
        info=info,
        model=model,
        tokenizer=tokenizer,
        format=fmt,
        config=config,
        context_length=info.context_length or DEFAULT_CONTEXT,
        memory_bytes=total,
        dtype_note=dtype_note,
        kv_bits=_usable_kv_bits(mf.planned_kv_bits(Path(info.path)), config),
    )


def _usable_kv_bits(kv_bits: int | None, config: dict) -> int | None:
    """The planned KV width, unless the heads cannot be packed in mlx-lm's groups of 64."""
    text = config.get("text_config") or config
    heads = text.get("num_attention_heads") or 1
    head_dim = text.get("head_dim") or (text.get("hidden_size") or 0) // heads
    return kv_bits if kv_bits and head_dim and head_dim % KV_GROUP == 0 else None


def release_memory() -> None:
    """Give the memory of dropped models back: collect them, then empty MLX's buffer cache."""
    import gc

    import mlx.core as mx

    gc.collect()
    mx.clear_cache()
