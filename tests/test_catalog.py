"""The catalog: what each model folder is, broken folders, the HF cache, resolve and delete."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from optiq_tui.library import catalog
from optiq_tui.library.model_files import OPTIQ_QUANT_FILE
from optiq_tui.progress import OptiqError
from optiq_tui.settings import paths


def _quantized_copy(src: Path, dst: Path, *, bits=4, group_size=64, mode="affine", predicate=None) -> Path:
    from mlx_lm import load
    from mlx_lm.utils import quantize_model, save

    model, tokenizer = load(str(src))
    config = json.loads((src / "config.json").read_text())
    model, config = quantize_model(model, config, group_size, bits, mode=mode, quant_predicate=predicate)
    save(dst, src, model, tokenizer, config)
    return dst


def _mlx_counts(path: Path) -> tuple[int, float]:
    """Parameters and bits per weight as mlx-lm itself counts them."""
    from mlx_lm import load
    from mlx_lm.utils import compute_bits_per_weight, get_total_parameters

    model, _ = load(str(path))
    return get_total_parameters(model), compute_bits_per_weight(model)


@pytest.fixture(scope="module")
def quantized_models(tiny_llama_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("quantized")
    mixed = lambda path, module: {"group_size": 64, "bits": 8, "mode": "affine"} if "mlp" in path else True  # noqa: E731
    return {
        "uniform": _quantized_copy(tiny_llama_dir, root / "uniform4"),
        "mixed": _quantized_copy(tiny_llama_dir, root / "mixed", predicate=mixed),
        "mxfp4": _quantized_copy(tiny_llama_dir, root / "mxfp4", mode="mxfp4", group_size=32),
    }


def _into_library(src: Path, name: str) -> Path:
    dst = paths().models / name
    shutil.copytree(src, dst)
    return dst


def test_unquantized_model(tiny_llama_dir):
    info = catalog.inspect_model(_into_library(tiny_llama_dir, "tiny"))
    n_params, bpw = _mlx_counts(tiny_llama_dir)
    assert (info.name, info.source, info.model_type) == ("tiny", "library", "llama")
    assert info.n_params == n_params
    assert info.bpw == pytest.approx(bpw, abs=0.01) and info.bpw == pytest.approx(16.0)
    assert (info.quant, info.quant_kind, info.bit_histogram) == ("fp16", "none", {})
    assert info.chat_format == "template" and info.context_length == 2048
    assert info.size_bytes == sum(p.stat().st_size for p in info.path.iterdir())


def test_uniform_quant_counts_like_mlx_lm(quantized_models):
    info = catalog.inspect_model(quantized_models["uniform"])
    n_params, bpw = _mlx_counts(quantized_models["uniform"])
    assert info.n_params == n_params
    assert info.bpw == pytest.approx(bpw, abs=0.01)
    assert (info.quant, info.quant_kind) == ("uniform 4-bit g64", "uniform")
    assert info.bit_histogram == {4: 15}  # 7 linears x 2 layers + the embedding


def test_mixed_and_optiq(quantized_models, tmp_path):
    info = catalog.inspect_model(quantized_models["mixed"])
    assert info.quant_kind == "mixed" and info.bit_histogram == {4: 9, 8: 6}
    assert info.quant == "mixed 4/8 (4:9 8:6)"
    n_params, bpw = _mlx_counts(quantized_models["mixed"])
    assert info.n_params == n_params and info.bpw == pytest.approx(bpw, abs=0.01)

    optiq = shutil.copytree(quantized_models["mixed"], tmp_path / "optiq")
    (optiq / OPTIQ_QUANT_FILE).write_text(json.dumps({"source_model": "tiny-llama"}))
    info = catalog.inspect_model(optiq)
    assert (info.quant_kind, info.quant, info.source_model) == ("optiq", "OptiQ 4/8 (4:9 8:6)", "tiny-llama")


def test_uniform_baseline_from_the_quantizer(quantized_models, tmp_path):
    baseline = shutil.copytree(quantized_models["uniform"], tmp_path / "baseline")
    (baseline / OPTIQ_QUANT_FILE).write_text(json.dumps({"method": "uniform", "source_model": "tiny"}))
    info = catalog.inspect_model(baseline)
    assert (info.quant_kind, info.quant, info.source_model) == ("uniform", "uniform 4-bit g64", "tiny")


def test_mxfp4(quantized_models):
    info = catalog.inspect_model(quantized_models["mxfp4"])
    assert (info.quant, info.quant_kind) == ("mxfp4", "mxfp4")
    n_params, bpw = _mlx_counts(quantized_models["mxfp4"])
    assert info.n_params == n_params and info.bpw == pytest.approx(bpw, abs=0.01)


def test_chat_formats(tiny_qwen3_dir, tmp_path):
    assert catalog.inspect_model(tiny_qwen3_dir).chat_format == "think"
    bare = shutil.copytree(tiny_qwen3_dir, tmp_path / "bare")
    tok_config = json.loads((bare / "tokenizer_config.json").read_text())
    del tok_config["chat_template"]
    (bare / "tokenizer_config.json").write_text(json.dumps(tok_config))
    assert catalog.inspect_model(bare).chat_format == "none"
    (bare / "chat_template.jinja").write_text("{{ messages }}")
    assert catalog.inspect_model(bare).chat_format == "template"
    config = json.loads((bare / "config.json").read_text())
    (bare / "config.json").write_text(json.dumps({**config, "model_type": "gpt_oss"}))
    assert catalog.inspect_model(bare).chat_format == "harmony"


def _break(folder: Path, how: str) -> None:
    if how == "no config.json":
        (folder / "config.json").unlink()
    elif how == "not valid JSON":
        (folder / "config.json").write_text("{not json")
    elif how == "no safetensors":
        (folder / "model.safetensors").unlink()
    elif how == "missing weight file":
        (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
        (folder / "model.safetensors.index.json").write_text(json.dumps(
            {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    elif how == "not supported by the installed mlx-lm":
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "model_type": "no_such_arch"}))
    elif how == "truncated":
        data = (folder / "model.safetensors").read_bytes()
        (folder / "model.safetensors").write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("how", ["no config.json", "not valid JSON", "no safetensors", "missing weight file",
                                 "not supported by the installed mlx-lm", "truncated"])
def test_broken_folders_are_skipped_with_a_reason(tiny_llama_dir, how):
    _into_library(tiny_llama_dir, "good")
    broken = _into_library(tiny_llama_dir, "broken")
    _break(broken, how)
    with pytest.raises(OptiqError, match=how):
        catalog.inspect_model(broken)
    result = catalog.scan(include_hf_cache=False)
    assert [m.name for m in result.models] == ["good"]
    assert len(result.skipped) == 1 and result.skipped[0].path == broken
    assert how in result.skipped[0].reason


def _hf_cache_repo(src: Path, repo_id: str, files: list[str] | None = None) -> Path:
    """A repo in the Hugging Face cache layout (blobs, snapshots of symlinks, refs/main)."""
    repo = Path(os.environ["HF_HOME"]) / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for path in sorted(files or [p.name for p in src.iterdir()]):
        blob = repo / "blobs" / hashlib.sha256((src / path).read_bytes()).hexdigest()
        shutil.copy(src / path, blob)
        (snapshot / path).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def test_hf_cache_models_and_non_mlx_repos(quantized_models, tiny_llama_dir):
    snapshot = _hf_cache_repo(quantized_models["uniform"], "mlx-community/tiny-4bit")
    _hf_cache_repo(tiny_llama_dir, "someone/gguf-only", files=["config.json", "tokenizer.json"])
    result = catalog.scan()
    [info] = result.models
    assert (info.name, info.repo_id, info.source) == ("mlx-community/tiny-4bit", "mlx-community/tiny-4bit", "hf-cache")
    assert info.path == snapshot and info.quant == "uniform 4-bit g64"
    assert info.size_bytes == sum(p.stat().st_size for p in snapshot.iterdir())
    [skipped] = result.skipped
    assert skipped.reason.startswith("someone/gguf-only: no safetensors weights")
    assert catalog.resolve("mlx-community/tiny-4bit") == info

    freed = catalog.delete(info)
    assert freed == info.size_bytes
    assert [m.name for m in catalog.scan().models] == []


def test_resolve_and_delete(tiny_llama_dir):
    folder = _into_library(tiny_llama_dir, "tiny")
    assert catalog.resolve("tiny").path == folder
    assert catalog.resolve(str(folder)).path == folder
    with pytest.raises(OptiqError, match="no model named 'nope'"):
        catalog.resolve("nope")
    with pytest.raises(OptiqError, match="optiq-chat demo"):
        catalog.resolve("demo")
    info = catalog.resolve("tiny")
    assert catalog.delete(info) == info.size_bytes
    assert not folder.exists() and list(paths().staging.iterdir()) == []
    with pytest.raises(OptiqError, match="no longer"):
        catalog.delete(info)


def test_delete_refuses_folders_outside_the_library(tiny_llama_dir):
    info = catalog.inspect_model(tiny_llama_dir)
    with pytest.raises(OptiqError, match="not in the library"):
        catalog.delete(info)
    assert tiny_llama_dir.exists()


def test_scan_does_not_import_mlx(tiny_llama_dir):
    _into_library(tiny_llama_dir, "tiny")
    code = (
        "import sys\nfrom optiq_tui.library.catalog import scan\n"
        "c = scan()\nassert [m.name for m in c.models] == ['tiny'], c\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('mlx', 'mlx_lm', 'transformers', 'textual')]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())


def test_scan_clears_leftovers_of_killed_operations_but_not_live_ones():
    import os
    import subprocess
    import sys

    from optiq_tui.library.catalog import scan
    from optiq_tui.settings import paths

    staging = paths().staging
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (staging / f"half-made.abc.pid{dead}").mkdir()
    (staging / f"half-made.abc.pid{dead}" / "model.safetensors").write_bytes(b"x" * 10)
    (staging / "legacy-without-owner").mkdir()
    live = staging / f"in-progress.def.pid{os.getpid()}"
    live.mkdir()
    scan(include_hf_cache=False)
    assert sorted(p.name for p in staging.iterdir()) == [live.name]
