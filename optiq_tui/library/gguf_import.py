"""Import a llama-family GGUF file (llama.cpp, Ollama, LM Studio) as an MLX model folder.

The `gguf` package (llama.cpp's own reader) gives the metadata, the tensor
types and numpy dequantizers for every type it knows (F32/F16/BF16, Q8_0,
Q4_0, Q4_1, Q5_*, the k-quants, ...). This module maps llama.cpp tensor and
metadata names onto the Hugging Face layout that stock ``mlx_lm.load`` reads
and writes the folder through ``staged_model``, so a failure leaves nothing.

Dequantize or keep? By default the weights are dequantized to float16: a
GGUF's low-bit weights are usually the best copy of the model a user has, and
the OptiQ quantizer needs real-valued weights to measure and re-quantize;
re-quantizing already-quantized weights compounds the error. With
``keep_quantized=True`` the Q4_0/Q4_1/Q8_0 weights are kept bit for bit as MLX
affine quantized weights (these three are affine with group size 32, so MLX
represents them exactly; MLX's own GGUF loader does the repacking), which
gives a small model to chat with right away.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optiq_tui.library.gguf_tokenizer import write_tokenizer
from optiq_tui.library.shards import ShardWriter
from optiq_tui.library.staging import safe_name, staged_model
from optiq_tui.progress import (
    Log,
    OptiqError,
    Progress,
    ProgressFn,
    check_cancel,
    no_progress,
)
from optiq_tui.settings import paths

PROVENANCE_FILE = "optiq_import.json"

# GGUF architecture -> (mlx-lm model_type, whether Q/K rows are permuted).
# llama.cpp's converter permutes the Q and K rows of "llama" models for its
# interleaved rotary layout; qwen2/qwen3 use the NeoX layout and are stored as is.
ARCHITECTURES = {"llama": ("llama", True), "qwen2": ("qwen2", False), "qwen3": ("qwen3", False)}

_GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_TENSORS = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
_FLOAT_TYPES = {"F32", "F16", "BF16"}
# Types that are MLX affine quantization with group size 32, exactly.
_KEEPABLE = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}


@dataclass(frozen=True)
class _Tensor:
    gguf_name: str
    hf_module: str  # e.g. model.layers.0.self_attn.q_proj
    suffix: str  # "weight" or "bias"
    type_name: str
    n_elements: int
    n_bytes: int
    permute_heads: int | None  # heads to un-permute Q/K rows with, or None


def _read(path: Path):
    import gguf

    with path.open("rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise OptiqError(f"{path.name} is not a GGUF file (it does not start with 'GGUF'); pick a .gguf model file")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError/IndexError/... on a cut-off file
        raise OptiqError(
            f"{path.name} is truncated or damaged ({exc}); download or copy it again"
        ) from exc
    meta = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            meta[key] = field.contents()
        except Exception as exc:
            raise OptiqError(f"{path.name}: cannot read metadata field {key!r} ({exc})") from exc
    return reader, meta


def _model_config(meta: dict[str, Any], tensors: dict[str, Any], arch: str) -> dict[str, Any]:
    model_type, _ = ARCHITECTURES[arch]

    def get(key: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{key}", default)

    try:
        heads = int(get("attention.head_count"))
        hidden = int(get("embedding_length"))
        config: dict[str, Any] = {
            "model_type": model_type,
            "architectures": [{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                               "qwen3": "Qwen3ForCausalLM"}[arch]],
            "hidden_size": hidden,
            "num_hidden_layers": int(get("block_count")),
            "intermediate_size": int(get("feed_forward_length")),
            "num_attention_heads": heads,
            "num_key_value_heads": int(get("attention.head_count_kv", heads)),
            "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon", 1e-5)),
            "rope_theta": _f32(get("rope.freq_base", 10000.0)),
            "vocab_size": int(tensors["token_embd.weight"].shape[-1]),
            "tie_word_embeddings": "output.weight" not in tensors,
        }
    except (TypeError, KeyError) as exc:
        raise OptiqError(f"the GGUF metadata lacks a hyper-parameter the model needs ({exc})") from exc
    head_dim = get("attention.key_length")
    if head_dim is not None:
        config["head_dim"] = int(head_dim)
    elif model_type == "qwen3":
        config["head_dim"] = hidden // heads
    if (ctx := get("context_length")) is not None:
        config["max_position_embeddings"] = int(ctx)
    if get("rope.scaling.type") == "linear" and get("rope.scaling.factor"):
        config["rope_scaling"] = {"type": "linear", "factor": float(get("rope.scaling.factor"))}
    if model_type == "qwen2":
        config["attention_bias"] = "blk.0.attn_q.bias" in tensors
    for key, name in (("bos_token_id", "tokenizer.ggml.bos_token_id"),
                      ("eos_token_id", "tokenizer.ggml.eos_token_id")):
        if meta.get(name) is not None:
            config[key] = int(meta[name])
    return config


def _f32(value: Any) -> float:
    """A float32 metadata value as the short decimal it was written from (1e-05, not 9.99e-06)."""
    return float(str(np.float32(value)))


def _llama3_rope_scaling(freqs: np.ndarray, config: dict[str, Any]) -> dict[str, Any]:
    """Recover Llama 3.1-style rope scaling from the `rope_freqs` tensor llama.cpp stores.

    llama.cpp bakes the per-frequency factors into a tensor; mlx-lm wants the
    parameters. Llama 3.x uses low/high frequency factors 1 and 4, so the
    factor is the largest entry and the original context is found by matching.
    """
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    inv = 1.0 / (config["rope_theta"] ** (np.arange(0, head_dim, 2) / head_dim))
    factor = float(freqs.max())
    for original in (8192, 4096, 16384, 2048, 32768):
        low_wavelen, high_wavelen = original / 1.0, original / 4.0
        expected = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < high_wavelen:
                expected.append(1.0)
            elif wavelen > low_wavelen:
                expected.append(factor)
            else:
                smooth = (original / wavelen - 1.0) / 3.0
                expected.append(1 / ((1 - smooth) / factor + smooth))
        if np.allclose(expected, freqs, rtol=1e-3):
            return {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0, "original_max_position_embeddings": original}
    raise OptiqError("the GGUF file uses a rope frequency scaling this importer does not recognise")


def _plan(reader, config: dict[str, Any], permuted: bool) -> list[_Tensor]:
    plan = []
    for t in reader.tensors:
        base, _, suffix = t.name.rpartition(".")
        parts = base.split(".")
        if base in _GLOBAL_TENSORS:
            module = _GLOBAL_TENSORS[base]
        elif len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_TENSORS:
            module = f"model.layers.{parts[1]}.{_LAYER_TENSORS[parts[2]]}"
        elif base == "rope_freqs":
            continue  # folded into config["rope_scaling"]
        else:
            raise OptiqError(
                f"the GGUF tensor {t.name!r} has no place in an mlx-lm "
                f"{config['model_type']} model; this file's architecture variant is not supported"
            )
        heads = None
        if permuted and parts[-1] in ("attn_q", "attn_k"):
            heads = config["num_attention_heads"] if parts[-1] == "attn_q" else config["num_key_value_heads"]
        plan.append(_Tensor(t.name, module, suffix, t.tensor_type.name, int(t.n_elements),
                            int(t.n_bytes), heads))
    return plan


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a Q or K projection (or its packed triple)."""
    # llama.cpp stores row (head, i, half) where HF has (head, half, i).
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _sha256(path: Path, progress: ProgressFn, cancel: threading.Event | None) -> str:
    digest = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(16 << 20):
            check_cancel(cancel)
            digest.update(chunk)
            done += len(chunk)
            progress(Progress("checksum", done, total, unit="B"))
    return digest.hexdigest()


def import_gguf(
    path: str | os.PathLike[str],
    name: str | None = None,
    *,
    keep_quantized: bool = False,
    origin: str | None = None,
    progress: ProgressFn = no_progress,
    cancel: threading.Event | None = None,
):
    """Import the GGUF file at ``path`` into the library as ``name`` (default: the file's stem).

    ``origin`` says where the file came from when its path will not last (the demo's wheel).
    """
    import mlx.core as mx

    from optiq_tui.library.catalog import inspect_model

    source = Path(path).expanduser().resolve()
    if not source.is_file():
        raise OptiqError(f"no such file: {source}")
    final = paths().models / safe_name(name or source.stem)
    if final.exists():  # staged_model checks too; this answers before any work is done
        raise OptiqError(f"a model named {final.name!r} already exists in the library; pick another --name")
    reader, meta = _read(source)
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise OptiqError(
            f"{source.name} is a {arch!r} model; GGUF import supports "
            f"{', '.join(sorted(ARCHITECTURES))} (llama-family) architectures"
        )
    tensors = {t.name: t for t in reader.tensors}
    if "token_embd.weight" not in tensors:
        raise OptiqError(f"{source.name} has no token embedding tensor; it is not a complete model")
    config = _model_config(meta, tensors, arch)
    if "rope_freqs.weight" in tensors:
        config["rope_scaling"] = _llama3_rope_scaling(
            np.asarray(tensors["rope_freqs.weight"].data, dtype=np.float32), config)
    plan = _plan(reader, config, ARCHITECTURES[arch][1])

    types = Counter(t.type_name for t in plan)
    unreadable = sorted(t for t in types if not _can_dequantize(t))
    if unreadable:
        raise OptiqError(
            f"{source.name} uses GGUF tensor type(s) {', '.join(unreadable)} that cannot be "
            "dequantized here; convert it with llama.cpp to Q8_0 or F16 first"
        )
    if keep_quantized:
        odd = sorted({t.type_name for t in plan} - _FLOAT_TYPES - set(_KEEPABLE))
        if odd:
            raise OptiqError(
                f"--keep-quantized keeps only Q4_0, Q4_1 and Q8_0 weights, and {source.name} "
                f"has {', '.join(odd)}; import it without --keep-quantized to dequantize"
            )
    # bfloat16 sources stay bfloat16 (float16 could overflow); everything else becomes float16.
    dtype = mx.bfloat16 if "BF16" in types else mx.float16
    dtype_name = "bfloat16" if dtype == mx.bfloat16 else "float16"
    config["torch_dtype"] = dtype_name
    provenance = {
        "format": "gguf",
        "source_file": str(source),
        "origin": origin or str(source),
        "source_name": meta.get("general.name"),
        "size_bytes": source.stat().st_size,
        "mtime": source.stat().st_mtime,
        "architecture": arch,
        "gguf_types": dict(types.most_common()),
        "weight_type": _weight_type(plan),
        "dequantized": not keep_quantized,
        "dtype": dtype_name,
        "tokenizer": {"model": meta.get("tokenizer.ggml.model"), "pre": meta.get("tokenizer.ggml.pre")},
    }
    provenance["sha256"] = _sha256(source, progress, cancel)

    packed = mx.load(str(source)) if keep_quantized else None
    total = sum(t.n_bytes for t in plan)
    done = 0
    per_layer_quant: dict[str, dict[str, int]] = {}
    with staged_model(final.name) as folder:
        writer = ShardWriter(folder)
        for t in plan:
            check_cancel(cancel)
            out = f"{t.hf_module}.{t.suffix}"
            if keep_quantized and t.type_name in _KEEPABLE:
                base = t.gguf_name.rpartition(".")[0]
                for part in ("weight", "scales", "biases"):
                    arr = packed.pop(f"{base}.{part}")
                    if t.permute_heads:
                        arr = mx.array(_unpermute(np.array(arr), t.permute_heads))
                    writer.add(f"{t.hf_module}.{part}", arr if part == "weight" else arr.astype(dtype))
                per_layer_quant[t.hf_module] = {"group_size": 32, "bits": _KEEPABLE[t.type_name]}
            else:
                values = _dequantize(tensors[t.gguf_name])
                if t.permute_heads:
                    values = _unpermute(values, t.permute_heads)
                writer.add(out, mx.array(values).astype(dtype))
            done += t.n_bytes
            progress(Progress("convert", done, total, message=t.gguf_name, unit="B"))
        writer.finish()
        if per_layer_quant:
            config["quantization"] = _quant_config(per_layer_quant)
            config["quantization_config"] = config["quantization"]
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        write_tokenizer(meta, folder, config.get("max_position_embeddings"))
        (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
    progress(Log(f"imported {source.name} ({provenance['weight_type']}) as {final.name}"))
    return inspect_model(final)


def _can_dequantize(type_name: str) -> bool:
    """Whether the gguf package can turn this tensor type into floats (tried on one zero block)."""
    import gguf

    qtype = gguf.GGMLQuantizationType[type_name]
    _block, type_size = gguf.GGML_QUANT_SIZES[qtype]
    try:
        gguf.quants.dequantize(np.zeros((1, type_size), dtype=np.uint8), qtype)
    except (NotImplementedError, ValueError, TypeError):
        return False
    return True


def _dequantize(tensor) -> np.ndarray:
    import gguf

    values = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
    # The reader's shape is ggml order (fastest dimension first); numpy wants it reversed.
    return values.reshape([int(d) for d in reversed(tensor.shape)])


def _weight_type(plan: list[_Tensor]) -> str:
    """The type of most of the weight matrices (e.g. Q4_1), what a user calls the file's quant."""
    counts = Counter(t.type_name for t in plan if t.suffix == "weight" and "norm" not in t.hf_module)
    return counts.most_common(1)[0][0] if counts else "F32"


def _quant_config(per_layer: dict[str, dict[str, int]]) -> dict[str, Any]:
    bits = Counter(q["bits"] for q in per_layer.values()).most_common(1)[0][0]
    config: dict[str, Any] = {"group_size": 32, "bits": bits, "mode": "affine"}
    config.update({k: v for k, v in per_layer.items() if v["bits"] != bits})
    return config
