"""The model library: every MLX-loadable model on this machine and what it is.

Models live in the app's models folder and in the Hugging Face cache. The
scan reads only config/JSON files and safetensors headers (no MLX import), so
the library screen can draw before the heavy stack is loaded.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from optiq_tui.library import model_files as mf
from optiq_tui.library.model_files import OPTIQ_QUANT_FILE
from optiq_tui.progress import OptiqError
from optiq_tui.settings import paths

# Written by the GGUF importer: where the weights came from.
GGUF_IMPORT_FILE = "optiq_import.json"
DEMO_ALIAS = "demo"

_DTYPE_TEXT = {"BF16": "bf16", "F16": "fp16", "F32": "fp32"}
_HARMONY_TYPES = {"gpt_oss"}


@dataclass(frozen=True)
class ModelInfo:
    """What the library knows about one model folder."""

    name: str
    path: Path
    source: str  # "library" | "hf-cache"
    repo_id: str | None
    model_type: str
    n_params: int
    size_bytes: int
    bpw: float
    quant: str
    quant_kind: str  # "none" | "uniform" | "optiq" | "mixed" | "mxfp4" | "gguf"
    bit_histogram: dict[int, int] = field(default_factory=dict)
    chat_format: str = "none"  # "harmony" | "template" | "think" | "none"
    context_length: int | None = None
    source_model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (paths as strings, histogram keys as strings)."""
        d = asdict(self)
        d["path"] = str(self.path)
        d["bit_histogram"] = {str(k): v for k, v in sorted(self.bit_histogram.items())}
        return d


@dataclass(frozen=True)
class Skipped:
    """A folder that looked like a model but cannot be loaded, and why."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Catalog:
    models: list[ModelInfo]
    skipped: list[Skipped]


def _describe_quant(
    folder: Path, config: dict[str, Any], table: dict, bits: dict[str, int]
) -> tuple[str, str, dict[int, int], str | None]:
    """(quant text, quant_kind, bit histogram, source model) of a model folder."""
    histogram = dict(sorted(Counter(bits.values()).items()))
    quant = config.get("quantization") or config.get("quantization_config") or {}
    mode = quant.get("mode") or quant.get("quant_method")
    optiq_file = folder / OPTIQ_QUANT_FILE
    gguf_file = folder / GGUF_IMPORT_FILE
    hist_text = " ".join(f"{b}:{n}" for b, n in histogram.items())

    # The quantizer also writes uniform baselines (method "uniform"); those are described as uniform.
    optiq_meta = _optional_json(optiq_file) if optiq_file.exists() else None
    if optiq_meta is not None and optiq_meta.get("method") != "uniform":
        widths = "/".join(str(b) for b in histogram) or "?"
        return f"OptiQ {widths} ({hist_text})", "optiq", histogram, _source_of(optiq_meta)
    made_from = _source_of(optiq_meta) if optiq_meta else None
    if gguf_file.exists():
        meta = _optional_json(gguf_file)
        src_type = meta.get("weight_type", "?")
        if meta.get("dequantized", True):
            dtype = _DTYPE_TEXT.get(mf.main_float_dtype(table) or "", "float")
            text = f"GGUF {src_type} → {dtype}"
        else:
            text = f"GGUF {src_type} (kept, {hist_text})"
        return text, "gguf", histogram, meta.get("origin") or meta.get("source_file")
    if mode == "mxfp4":
        return "mxfp4", "mxfp4", histogram, made_from
    if histogram:
        group = quant.get("group_size", 64)
        if len(histogram) == 1:
            return f"uniform {next(iter(histogram))}-bit g{group}", "uniform", histogram, made_from
        widths = "/".join(str(b) for b in histogram)
        return f"mixed {widths} ({hist_text})", "mixed", histogram, made_from
    dtype = mf.main_float_dtype(table)
    return _DTYPE_TEXT.get(dtype or "", dtype or "unknown"), "none", {}, made_from


def _optional_json(path: Path) -> dict[str, Any]:
    try:
        return mf.read_json(path)
    except OptiqError:
        return {}


def _source_of(meta: dict[str, Any]) -> str | None:
    for key in ("source_model", "source", "base_model"):
        value = meta.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, dict) and isinstance(value.get("name"), str):
            return value["name"]
    return None


def _chat_format(model_type: str, template: str | None) -> str:
    if model_type in _HARMONY_TYPES:
        return "harmony"
    if template is None:
        return "none"
    return "think" if "<think>" in template else "template"


# What the library says beside a chat format that needs explaining (a GGUF of a base model has no template).
CHAT_FORMAT_NOTES = {"none": "base model: no chat template, plain completion"}


def chat_format_text(chat_format: str) -> str:
    """The chat format as the library shows it, with its note when it has one."""
    note = CHAT_FORMAT_NOTES.get(chat_format)
    return f"{chat_format} ({note})" if note else chat_format


def _context_length(config: dict[str, Any]) -> int | None:
    for cfg in (config, config.get("text_config") or {}):
        for key in ("max_position_embeddings", "max_seq_len", "seq_length", "n_ctx", "max_sequence_length"):
            if isinstance(cfg.get(key), int):
                return cfg[key]
    return None


def inspect_model(
    path: str | os.PathLike[str],
    *,
    name: str | None = None,
    source: str = "library",
    repo_id: str | None = None,
    size_bytes: int | None = None,
) -> ModelInfo:
    """Describe the model folder at ``path``; OptiqError naming the problem if it is not loadable."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise OptiqError(f"{folder} is not a folder")
    config_path = folder / "config.json"
    if not config_path.exists():
        raise OptiqError(f"{folder.name}: no config.json (not a Hugging Face / MLX model folder)")
    config = mf.read_json(config_path)
    model_type = config.get("model_type")
    if not isinstance(model_type, str):
        raise OptiqError(f"{folder.name}: config.json has no model_type")
    if not mf.model_type_supported(model_type):
        raise OptiqError(
            f"{folder.name}: model_type {model_type!r} is not supported by the installed mlx-lm "
            "(upgrade mlx-lm, or pick another model)"
        )
    try:
        table = mf.tensor_table(folder)
    except OptiqError as exc:
        raise OptiqError(f"{folder.name}: {exc}") from exc
    bits = mf.layer_bits(config, mf.quantized_modules(table))
    n_params = mf.count_parameters(table, bits)
    weight_bytes = sum(nbytes for _d, _s, nbytes in table.values())
    quant, kind, histogram, source_model = _describe_quant(folder, config, table, bits)
    return ModelInfo(
        name=name or folder.name,
        path=folder,
        source=source,
        repo_id=repo_id,
        model_type=model_type,
        n_params=n_params,
        size_bytes=mf.folder_size(folder) if size_bytes is None else size_bytes,
        bpw=round(weight_bytes * 8 / n_params, 3) if n_params else 0.0,
        quant=quant,
        quant_kind=kind,
        bit_histogram=histogram,
        chat_format=_chat_format(model_type, mf.chat_template(folder)),
        context_length=_context_length(config),
        source_model=source_model,
    )


def _scan_library(models: list[ModelInfo], skipped: list[Skipped]) -> None:
    for folder in sorted(paths().models.iterdir()):
        if not folder.is_dir() or folder.name.startswith("."):
            continue
        try:
            models.append(inspect_model(folder))
        except OptiqError as exc:
            skipped.append(Skipped(folder, str(exc)))


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, from the environment as it is now.

    huggingface_hub computes its default once at import; reading the variables
    here keeps the catalog and downloads in step when HF_HOME changes later.
    """
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _scan_hf_cache(models: list[ModelInfo], skipped: list[Skipped]) -> None:
    if not hf_cache_dir().is_dir():
        return  # no cache: skip importing huggingface_hub (and its HTTP stack) at all
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir(hf_cache_dir())
    except CacheNotFound:
        return
    except OSError as exc:
        skipped.append(Skipped(hf_cache_dir(), f"cannot read the Hugging Face cache: {exc}"))
        return
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        revision = max(repo.revisions, key=lambda r: r.last_modified)
        try:
            models.append(
                inspect_model(
                    revision.snapshot_path,
                    name=repo.repo_id,
                    source="hf-cache",
                    repo_id=repo.repo_id,
                    size_bytes=revision.size_on_disk,
                )
            )
        except OptiqError as exc:
            reason = str(exc).split(": ", 1)[-1]
            if "config.json" in reason or "weight" in reason:
                reason += f"; if a download was stopped, `optiq-chat pull {repo.repo_id}` completes it"
            skipped.append(Skipped(revision.snapshot_path, f"{repo.repo_id}: {reason}"))


def scan(include_hf_cache: bool = True) -> Catalog:
    """Every loadable model in the library (and the HF cache), plus what was skipped and why.

    Also clears what killed imports, downloads and quantizes left in the
    staging area, so their space comes back at the next look at the library.
    """
    from optiq_tui.library.staging import clean_staging

    clean_staging()
    models: list[ModelInfo] = []
    skipped: list[Skipped] = []
    _scan_library(models, skipped)
    if include_hf_cache:
        _scan_hf_cache(models, skipped)
    return Catalog(models, skipped)


def resolve(name_or_path: str) -> ModelInfo:
    """A model by folder path, library name, repo id, or ``"demo"``."""
    from optiq_tui.library.staging import safe_name

    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        return inspect_model(candidate)
    if name_or_path == DEMO_ALIAS:
        from optiq_tui.library.demo import DEMO_NAME

        folder = paths().models / DEMO_NAME
        if not folder.is_dir():
            raise OptiqError("the demo model is not installed yet; run `optiq-chat demo` first")
        return inspect_model(folder)
    catalog = scan()
    for info in catalog.models:
        if name_or_path in (info.name, info.repo_id):
            return info
    try:
        wanted = safe_name(name_or_path)
    except OptiqError:
        wanted = name_or_path
    for info in catalog.models:
        if info.path.name == wanted:
            return info
    for item in catalog.skipped:
        if item.path.name == wanted or item.reason.startswith(f"{name_or_path}:"):
            raise OptiqError(f"{name_or_path} cannot be used: {item.reason}")
    names = ", ".join(sorted(i.name for i in catalog.models)[:8]) or "none yet"
    raise OptiqError(f"no model named {name_or_path!r} (models: {names}); see `optiq-chat list`")


def delete(info: ModelInfo) -> int:
    """Delete a model from disk; returns the bytes freed."""
    if info.source == "hf-cache":
        from huggingface_hub import scan_cache_dir

        cache = scan_cache_dir(hf_cache_dir())
        for repo in cache.repos:
            for revision in repo.revisions:
                if Path(revision.snapshot_path) == Path(info.path):
                    # delete_revisions selects by commit hash across all repos; refuse if that is ambiguous.
                    same = [r for rp in cache.repos for r in rp.revisions if r.commit_hash == revision.commit_hash]
                    if len(same) > 1:
                        raise OptiqError(f"{info.name} shares its commit with another cached repo; "
                                         "delete it with `hf cache delete` instead")
                    strategy = cache.delete_revisions(revision.commit_hash)
                    strategy.execute()
                    return strategy.expected_freed_size
        raise OptiqError(f"{info.name} is no longer in the Hugging Face cache")
    folder = Path(info.path)
    if folder.parent.resolve() != paths().models.resolve():
        raise OptiqError(f"{folder} is not in the library folder; delete it yourself if you mean to")
    if not folder.is_dir():
        raise OptiqError(f"{info.name} is no longer in the library")
    freed = mf.folder_size(folder)
    # Move out of the library first so a half-deleted folder is never listed.
    trash = Path(tempfile.mkdtemp(prefix="deleting.", dir=paths().staging))
    os.replace(folder, trash / folder.name)
    shutil.rmtree(trash, ignore_errors=True)
    return freed
