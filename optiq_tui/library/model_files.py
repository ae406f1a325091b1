"""Read what a model folder is from its files alone, without importing MLX.

The library screen lists models before MLX is imported (the first paint must
stay fast), so parameter counts and bits per weight come from safetensors
headers and config.json rather than from loading the arrays.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

from optiq_tui.progress import OptiqError

# Bytes per element of each safetensors dtype.
_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
    "I16": 2, "U16": 2, "I8": 1, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}


# Where a folder keeps its recommended sampler (Hugging Face's name for it).
GENERATION_CONFIG = "generation_config.json"
# Written by the OptiQ quantizer next to the weights: how it was made (and its planned KV bits).
OPTIQ_QUANT_FILE = "optiq_quant.json"
# KV-cache widths mlx-lm's generation can quantize to (its kv_bits).
KV_BITS = (2, 3, 4, 5, 6, 8)
KV_GROUP = 64  # mlx-lm's kv_group_size default: one scale and one bias per 64 values


def planned_kv_bits(folder: Path) -> int | None:
    """The KV-cache width a quant was planned for (``quantize --kv-bits``), if any."""
    path = folder / OPTIQ_QUANT_FILE
    if not path.exists():
        return None
    try:
        value = read_json(path).get("kv_bits")
    except OptiqError:
        return None  # a broken sidecar is the library's to report, not generation's
    return value if value in KV_BITS else None


def write_generation_config(folder: Path, values: dict[str, float | int]) -> None:
    """Record a recommended sampler (temperature, top_p, top_k, min_p) in ``folder``."""
    if values:
        (folder / GENERATION_CONFIG).write_text(json.dumps(values, indent=2) + "\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; OptiqError naming the file when it is broken."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise OptiqError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise OptiqError(f"{path.name} is not valid JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise OptiqError(f"{path.name} does not hold a JSON object")
    return value


def safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """The tensor table of a safetensors file: name -> {dtype, shape, data_offsets}.

    The format is an 8-byte little-endian header length followed by a JSON
    header; reading it directly avoids importing a framework for a listing.
    """
    try:
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise OptiqError(f"{path.name} is truncated (no safetensors header)")
            (length,) = struct.unpack("<Q", raw)
            size = path.stat().st_size
            if length > size - 8 or length > 100 << 20:
                raise OptiqError(f"{path.name} is not a valid safetensors file")
            header = json.loads(f.read(length))
    except OSError as exc:
        raise OptiqError(f"cannot read {path.name}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise OptiqError(f"{path.name} has a broken safetensors header") from exc
    header.pop("__metadata__", None)
    end = max((int(t["data_offsets"][1]) for t in header.values()), default=0)
    if 8 + length + end > size:
        raise OptiqError(f"{path.name} is truncated ({size} bytes, its header needs {8 + length + end})")
    return header


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files mlx-lm would load; OptiqError if none or a listed shard is missing."""
    index = folder / "model.safetensors.index.json"
    files = sorted(folder.glob("model*.safetensors"))
    if index.exists():
        weight_map = read_json(index).get("weight_map", {})
        missing = sorted({f for f in weight_map.values() if not (folder / f).exists()})
        if missing:
            raise OptiqError(f"missing weight file(s): {', '.join(missing)} (incomplete download or copy?)")
    if not files:
        others = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".gguf", ".pt", ".pth"))
        hint = f" (found {', '.join(others[:3])}: not an MLX model)" if others else ""
        raise OptiqError(f"no safetensors weights{hint}")
    return files


def tensor_table(folder: Path) -> dict[str, tuple[str, list[int], int]]:
    """name -> (dtype, shape, nbytes) over all weight files of ``folder``."""
    table = {}
    for path in weight_files(folder):
        for name, t in safetensors_header(path).items():
            start, end = t["data_offsets"]
            table[name] = (t["dtype"], list(t["shape"]), int(end) - int(start))
    return table


def _numel(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def layer_bits(config: dict[str, Any], quantized: set[str]) -> dict[str, int]:
    """Bits of every quantized module, from config's quantization (per-layer entries win)."""
    quant = config.get("quantization") or config.get("quantization_config") or {}
    default = int(quant.get("bits", 4))
    out = {}
    for module in quantized:
        entry = quant.get(module)
        out[module] = int(entry["bits"]) if isinstance(entry, dict) and "bits" in entry else default
    return out


def count_parameters(
    table: dict[str, tuple[str, list[int], int]], bits: dict[str, int]
) -> int:
    """Logical parameters, counted as mlx-lm's get_total_parameters does.

    A quantized module's packed uint32 weight counts as weight.size * 32 / bits
    parameters; its scales and quantization biases do not count.
    """
    total = 0
    for name, (_dtype, shape, _nbytes) in table.items():
        module, _, leaf = name.rpartition(".")
        if module in bits:
            if leaf == "weight":
                total += _numel(shape) * 32 // bits[module]
            elif leaf not in ("scales", "biases"):
                total += _numel(shape)
        else:
            total += _numel(shape)
    return total


def quantized_modules(table: dict[str, tuple[str, list[int], int]]) -> set[str]:
    return {name[: -len(".scales")] for name in table if name.endswith(".scales")}


def main_float_dtype(table: dict[str, tuple[str, list[int], int]]) -> str | None:
    """The float dtype holding most bytes (what an unquantized model is stored in)."""
    sizes: dict[str, int] = {}
    for dtype, _shape, nbytes in table.values():
        if dtype in ("F32", "F16", "BF16"):
            sizes[dtype] = sizes.get(dtype, 0) + nbytes
    return max(sizes, key=sizes.__getitem__) if sizes else None


@lru_cache(maxsize=1)
def _mlx_lm_models() -> tuple[Path | None, dict[str, str]]:
    """Where mlx-lm's model modules live and its model_type remapping, without importing it.

    ``mlx_lm.utils`` imports MLX, so MODEL_REMAPPING is read from its source
    with ``ast`` (a literal dict) to keep catalog scans free of MLX.
    """
    spec = importlib.util.find_spec("mlx_lm")
    if spec is None or not spec.submodule_search_locations:
        return None, {}
    root = Path(next(iter(spec.submodule_search_locations)))
    remap: dict[str, str] = {}
    try:
        tree = ast.parse((root / "utils.py").read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "MODEL_REMAPPING" for t in node.targets
            ):
                remap = ast.literal_eval(node.value)
    except (OSError, SyntaxError, ValueError):
        pass
    return root / "models", remap


def model_type_supported(model_type: str) -> bool:
    models, remap = _mlx_lm_models()
    if models is None:
        return False
    return (models / f"{remap.get(model_type, model_type)}.py").exists()


def chat_template(folder: Path) -> str | None:
    """The chat template text, wherever the folder keeps it."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8", errors="replace")
    for name in ("chat_template.json", "tokenizer_config.json"):
        path = folder / name
        if path.exists():
            try:
                template = read_json(path).get("chat_template")
            except OptiqError:
                continue
            if isinstance(template, list):  # named templates: [{"name":..., "template":...}]
                template = next((t.get("template") for t in template if t.get("name") == "default"),
                                template[0].get("template") if template else None)
            if template:
                return str(template)
    return None


def folder_size(folder: Path) -> int:
    """Bytes on disk of a folder's files (symlinks followed: the HF cache links to blobs)."""
    total = 0
    for path in folder.rglob("*"):
        try:
            if path.is_file():
                total += path.stat().st_size
        except OSError:
            continue
    return total
