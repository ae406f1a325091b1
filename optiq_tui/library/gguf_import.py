"""Import a GGUF file (llama.cpp, Ollama, LM Studio) as an MLX model folder.

The `gguf` package (llama.cpp's own reader) gives the metadata, the tensor
types and numpy dequantizers for every type it knows (F32/F16/BF16, Q8_0,
Q4_0, Q4_1, Q5_*, the k-quants, the i-quants, MXFP4, ...). ``gguf_arch`` maps
each family's llama.cpp tensor and metadata names onto the mlx-lm model that
stock ``mlx_lm.load`` reads; this module checks the mapping against that model,
converts tensor by tensor and writes the folder through ``staged_model``, so
a failure leaves nothing.

Dequantize or keep? By default the weights are dequantized to float16: a
GGUF's low-bit weights are usually the best copy of the model a user has, and
the OptiQ quantizer needs real-valued weights to measure and re-quantize;
re-quantizing already-quantized weights compounds the error. With
``keep_quantized=True`` the Q4_0/Q4_1/Q8_0 weights are kept bit for bit as MLX
affine quantized weights and MXFP4 (gpt-oss experts) as MLX mxfp4 (groups of
32 that MLX represents exactly; only the bits are repacked), which gives a
small model to chat with right away.
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

from optiq_tui.library.gguf_arch import (
    BARE_PARAMETERS,
    CONFIG_TENSORS,
    GLOBAL_TENSORS,
    Family,
    Hparams,
    family_of,
    model_config,
)
from optiq_tui.library.gguf_tokenizer import build_tokenizer, unknown_pre_tokenizer, write_tokenizer
from optiq_tui.library.shards import ShardWriter
from optiq_tui.library.model_files import write_generation_config
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

_FLOAT_TYPES = {"F32", "F16", "BF16"}
# Types that MLX holds exactly (groups of 32), as the quantization config names them.
_KEEPABLE = {
    "Q4_0": {"group_size": 32, "bits": 4, "mode": "affine"},
    "Q4_1": {"group_size": 32, "bits": 4, "mode": "affine"},
    "Q8_0": {"group_size": 32, "bits": 8, "mode": "affine"},
    "MXFP4": {"group_size": 32, "bits": 4, "mode": "mxfp4"},
}


@dataclass(frozen=True)
class _Tensor:
    gguf_name: str
    out: str  # the mlx-lm parameter, e.g. model.layers.0.self_attn.q_proj.weight
    type_name: str
    n_bytes: int
    permute_heads: int | None  # heads to un-permute Q/K rows with, or None
    shift: float  # subtracted from the values (Gemma's stored 1 + w norms)

    @property
    def module(self) -> str:
        return self.out.rpartition(".")[0]


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


def _plan(reader, config: dict[str, Any], family: Family) -> list[_Tensor]:
    plan = []
    for t in reader.tensors:
        base, _, suffix = t.name.rpartition(".")
        parts = base.split(".")
        if base in GLOBAL_TENSORS:
            module = GLOBAL_TENSORS[base]
        elif len(parts) == 3 and parts[0] == "blk" and parts[2] in family.layers:
            module = f"model.layers.{parts[1]}.{family.layers[parts[2]]}"
        elif base in CONFIG_TENSORS:
            continue  # folded into the config (rope scaling)
        else:
            raise OptiqError(
                f"the GGUF tensor {t.name!r} has no place in an mlx-lm "
                f"{config['model_type']} model; this file's architecture variant is not supported"
            )
        heads = None
        if family.permute_qk and parts[-1] in ("attn_q", "attn_k"):
            heads = config["num_attention_heads"] if parts[-1] == "attn_q" else config["num_key_value_heads"]
        shift = family.norm_shift if parts[-1].endswith("norm") and suffix == "weight" else 0.0
        bare = module.split(".", 3)[-1] in BARE_PARAMETERS
        plan.append(_Tensor(t.name, module if bare else f"{module}.{suffix}", t.tensor_type.name,
                            int(t.n_bytes), heads, shift))
    if family.lm_head == "required" and not any(t.out == "lm_head.weight" for t in plan):
        # The mlx-lm model always has an output head: a tied file's embedding fills it.
        embed = next(t for t in plan if t.gguf_name == "token_embd.weight")
        plan.append(_Tensor(embed.gguf_name, "lm_head.weight", embed.type_name, embed.n_bytes, None, 0.0))
    return plan


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's rotary row permutation of a Q or K projection (or its packed triple)."""
    # llama.cpp stores row (head, i, half) where HF has (head, half, i).
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _expected_shapes(config: dict[str, Any], plan: list[_Tensor], file_name: str) -> dict[str, tuple[int, ...]]:
    """The mlx-lm model's parameter shapes; an OptiqError if the plan misses or adds any.

    Building the model is cheap: MLX arrays are lazy, so its random init never runs.
    """
    from mlx.utils import tree_flatten
    from mlx_lm.utils import _get_classes  # mlx-lm's own config -> class lookup

    try:  # an older mlx-lm may lack the model; constructors assert, index and divide on bad configs
        model_class, args_class = _get_classes(config)
        model = model_class(args_class.from_dict(config))
    except Exception as exc:
        raise OptiqError(f"{file_name}: its hyper-parameters do not make an mlx-lm "
                         f"{config['model_type']} model ({exc})") from exc
    shapes = {name: tuple(p.shape) for name, p in tree_flatten(model.parameters())}
    given = {t.out for t in plan}
    extra = sorted(given - set(shapes))
    missing = sorted(set(shapes) - given - {"lm_head.weight"})
    if extra or missing:
        what = f"unexpected {extra[0]}" if extra else f"no {missing[0]}"
        raise OptiqError(f"{file_name} does not fit mlx-lm's {config['model_type']} model ({what}); "
                         "this file's architecture variant is not supported")
    return shapes


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
    tensors = {t.name: t for t in reader.tensors}
    family = family_of(meta.get("general.architecture"), tensors, source.name)
    if "token_embd.weight" not in tensors:
        raise OptiqError(f"{source.name} has no token embedding tensor; it is not a complete model")
    try:
        config = model_config(family, Hparams(meta["general.architecture"], meta, tensors), meta)
    except (TypeError, ValueError) as exc:  # e.g. a per-layer list where one number was expected
        raise OptiqError(f"{source.name}: cannot read its {family.model_type} hyper-parameters ({exc})") from exc
    plan = _plan(reader, config, family)
    types = Counter(t.type_name for t in plan)
    unreadable = sorted(t for t in types if not _can_dequantize(t))
    if unreadable:
        raise OptiqError(
            f"{source.name} uses GGUF tensor type(s) {', '.join(unreadable)} that cannot be "
            "dequantized here; convert it with llama.cpp to Q8_0 or F16 first"
        )
    shapes = _expected_shapes(config, plan, source.name)
    tokenizer = build_tokenizer(meta)  # before converting: an unsupported vocabulary stops here
    if (pre := unknown_pre_tokenizer(meta)) is not None:
        progress(Log(f"{source.name}: pre-tokenizer {pre!r} is not known here; GPT-2's split is used, "
                     "so some texts may tokenize differently than in llama.cpp"))
    if keep_quantized:
        odd = sorted({t.type_name for t in plan} - _FLOAT_TYPES - set(_KEEPABLE))
        if odd:
            raise OptiqError(
                f"--keep-quantized keeps only Q4_0, Q4_1, Q8_0 and MXFP4 weights, and {source.name} "
                f"has {', '.join(odd)}; import it without --keep-quantized to dequantize"
            )
    # bfloat16 sources and families whose activations overflow float16 (Gemma) get bfloat16.
    dtype = mx.bfloat16 if "BF16" in types or family.dtype == "bfloat16" else mx.float16
    dtype_name = "bfloat16" if dtype == mx.bfloat16 else "float16"
    config["torch_dtype"] = dtype_name
    provenance = {
        "format": "gguf",
        "source_file": str(source),
        "origin": origin or str(source),
        "source_name": meta.get("general.name"),
        "size_bytes": source.stat().st_size,
        "mtime": source.stat().st_mtime,
        "architecture": meta["general.architecture"],
        "gguf_types": dict(types.most_common()),
        "weight_type": _weight_type(plan),
        "dequantized": not keep_quantized,
        "dtype": dtype_name,
        "tokenizer": {"model": meta.get("tokenizer.ggml.model"), "pre": meta.get("tokenizer.ggml.pre")},
    }
    provenance["sha256"] = _sha256(source, progress, cancel)

    total = sum(t.n_bytes for t in plan)
    done = 0
    per_layer_quant: dict[str, dict[str, Any]] = {}
    # What the folder will take: dequantized tensors at 2 bytes a value, kept ones about as in the file.
    needed = sum(t.n_bytes if keep_quantized and t.type_name in _KEEPABLE else 2 * math.prod(shapes[t.out])
                 for t in plan)
    with staged_model(final.name, needed=needed) as folder:
        writer = ShardWriter(folder)
        for t in plan:
            check_cancel(cancel)
            if keep_quantized and t.type_name in _KEEPABLE and t.out.endswith(".weight") and not t.shift:
                parts = _to_mlx_quant(t.type_name, np.asarray(tensors[t.gguf_name].data), shapes[t.out])
                for part, arr in parts.items():
                    if t.permute_heads:
                        arr = _unpermute(arr, t.permute_heads)
                    # float16 scales/biases follow the model's dtype; weights and e8m0 scales stay integers.
                    value = mx.array(arr)
                    writer.add(f"{t.module}.{part}", value.astype(dtype) if arr.dtype == np.float16 else value)
                per_layer_quant[t.module] = _KEEPABLE[t.type_name]
            else:
                values = _dequantize(tensors[t.gguf_name])
                if t.permute_heads:
                    values = _unpermute(values, t.permute_heads)
                if t.shift:
                    values = values - np.float32(t.shift)
                writer.add(t.out, mx.array(_fit(values, shapes[t.out], t.gguf_name)).astype(dtype))
            done += t.n_bytes
            progress(Progress("convert", done, total, message=t.gguf_name, unit="B"))
        writer.finish()
        if per_layer_quant:
            config["quantization"] = _quant_config(per_layer_quant)
            config["quantization_config"] = config["quantization"]
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        write_tokenizer(tokenizer, meta, folder, config.get("max_position_embeddings"))
        (folder / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2))
        write_generation_config(folder, sampling_metadata(meta))
    if not meta.get("tokenizer.chat_template"):
        progress(Log(f"{source.name} has no chat template: a base model, chat is plain completion"))
    progress(Log(f"imported {source.name} ({provenance['weight_type']}) as {final.name}"))
    return inspect_model(final)


# llama.cpp's recommended-sampler keys (general.sampling.*) and Hugging Face's names for them.
_SAMPLING_KEYS = {"general.sampling.temp": "temperature", "general.sampling.top_p": "top_p",
                  "general.sampling.top_k": "top_k", "general.sampling.min_p": "min_p"}


def sampling_metadata(meta: dict[str, Any]) -> dict[str, float | int]:
    """The sampler a GGUF's authors recommend, as generation_config.json keys (empty if none)."""
    out: dict[str, float | int] = {}
    for key, hf in _SAMPLING_KEYS.items():
        value = meta.get(key)
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            out[hf] = int(value) if hf == "top_k" else float(value)
    return out


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


def _fit(values: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``values`` in the model's shape: GGUF drops or keeps size-1 axes (Qwen2-MoE's shared gate)."""
    if values.shape == shape:
        return values
    if values.size != math.prod(shape):
        raise OptiqError(f"the GGUF tensor {name!r} has shape {values.shape}, the model expects {shape}")
    return values.reshape(shape)


def _weight_type(plan: list[_Tensor]) -> str:
    """The type of most of the weight matrices (e.g. Q4_1), what a user calls the file's quant."""
    counts = Counter(t.type_name for t in plan if t.out.endswith(".weight") and "norm" not in t.out)
    return counts.most_common(1)[0][0] if counts else "F32"


def _quant_config(per_layer: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """mlx-lm's quantization config: the commonest setting on top, the layers that differ by name."""
    key = lambda q: json.dumps(q, sort_keys=True)  # noqa: E731
    main = Counter(key(q) for q in per_layer.values()).most_common(1)[0][0]
    config: dict[str, Any] = json.loads(main)
    config.update({k: v for k, v in per_layer.items() if key(v) != main})
    return config


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """A ggml 4-bit block's 32 codes from its 16 bytes: elements 0-15 low nibbles, 16-31 high ones."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _pack(codes: np.ndarray, bits: int, shape: tuple[int, ...]) -> np.ndarray:
    """MLX's packing: consecutive codes fill each uint32 from the lowest bits up."""
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return np.ascontiguousarray(codes.astype(np.uint8)).reshape(*shape[:-1], -1).view(np.uint32)


def _to_mlx_quant(type_name: str, data: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """A Q4_0/Q4_1/Q8_0/MXFP4 tensor's blocks as MLX quantized arrays, bit for bit.

    Q4_0 is d*(q-8), Q4_1 d*q+m and Q8_0 d*q (q signed): MLX affine groups of 32
    with scale d and bias -8d, m or -128d. MXFP4 and MLX mxfp4 share the e8m0
    scales and e2m1 codes (ggml's value table is doubled and its scale halved).
    """
    size = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34, "MXFP4": 17}[type_name]
    blocks = data.reshape(*shape[:-1], shape[-1] // 32, size)
    if type_name == "MXFP4":
        return {"weight": _pack(_nibbles(blocks[..., 1:]), 4, shape), "scales": blocks[..., 0].copy()}
    d = np.ascontiguousarray(blocks[..., :2]).view(np.float16)[..., 0]
    if type_name == "Q8_0":
        codes = (blocks[..., 2:].view(np.int8).astype(np.int16) + 128).astype(np.uint8)
        return {"weight": _pack(codes, 8, shape), "scales": d, "biases": -128 * d}
    offset = 2 if type_name == "Q4_0" else 4
    bias = -8 * d if type_name == "Q4_0" else np.ascontiguousarray(blocks[..., 2:4]).view(np.float16)[..., 0]
    return {"weight": _pack(_nibbles(blocks[..., offset:]), 4, shape), "scales": d, "biases": bias}
