"""Loading: memory estimate and refusal, progress, cancel; diagnostics."""

from __future__ import annotations

import threading

import pytest

from optiq_tui.engine import loader
from optiq_tui.progress import Cancelled, OptiqError, Progress


def test_estimate_covers_weights_kv_and_margin(tiny_llama_dir, monkeypatch):
    monkeypatch.setenv("OPTIQ_CPU_FLOAT32", "0")
    weights = sum(f.stat().st_size for f in tiny_llama_dir.glob("*.safetensors"))
    need = loader.estimate_memory(tiny_llama_dir)
    # 2 layers x 2 KV heads x 16 dims x (K+V) x 2 bytes x 2048 tokens, + 256 MB floor margin
    kv = 2 * 2 * 16 * 2 * 2 * 2048
    assert need == weights + kv + loader.MARGIN_MIN_BYTES
    # Cast to float32 for the CPU's OpenBLAS, the float16 weights take twice the memory.
    monkeypatch.setenv("OPTIQ_CPU_FLOAT32", "1")
    if loader.cpu_float32(tiny_llama_dir):
        assert loader.estimate_memory(tiny_llama_dir) > need + weights * 0.9


def test_half_precision_model_runs_in_float32_on_a_cpu_with_openblas(tiny_llama_dir, monkeypatch):
    import mlx.core as mx
    from mlx.utils import tree_flatten

    from optiq_tui.engine.blas import loaded_blas

    if mx.default_device() != mx.cpu or "OpenBLAS" not in loaded_blas():
        pytest.skip("only on a CPU backend with OpenBLAS loaded")
    loaded = loader.load(tiny_llama_dir)
    assert {a.dtype for _k, a in tree_flatten(loaded.model.parameters())} == {mx.float32}
    assert "float32" in loaded.dtype_note
    monkeypatch.setenv("OPTIQ_CPU_FLOAT32", "0")
    kept = loader.load(tiny_llama_dir)
    assert {a.dtype for _k, a in tree_flatten(kept.model.parameters())} == {mx.float16}
    assert kept.dtype_note == ""


def test_refuses_a_model_that_does_not_fit(tiny_llama_dir, monkeypatch):
    monkeypatch.setattr(loader, "available_memory", lambda: (100_000_000, "available system memory"))
    with pytest.raises(OptiqError, match="needs about .* but only 100.0 MB is free"):
        loader.load(tiny_llama_dir)


def test_load_reports_progress_to_the_end(tiny_llama_dir):
    events = []
    loaded = loader.load(tiny_llama_dir, progress=events.append)
    loads = [e for e in events if isinstance(e, Progress) and e.total]
    assert loads and loads[-1].done == loads[-1].total == loaded.memory_bytes
    assert loaded.format.kind == "template" and loaded.context_length == 2048
    assert loaded.info.name == "tiny-llama"


def test_load_can_be_cancelled(tiny_llama_dir):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(Cancelled):
        loader.load(tiny_llama_dir, cancel=cancel)


def test_not_a_model_is_a_clear_error(tmp_path):
    with pytest.raises(OptiqError, match="no config.json"):
        loader.load(tmp_path)


def test_doctor_reports_backend_blas_memory_versions():
    from optiq_tui.engine.diagnostics import doctor

    d = doctor()
    assert d.backend in ("CPU", "Metal (GPU)")
    assert d.blas
    assert 0 < d.memory_available_bytes <= d.memory_total_bytes
    assert d.versions["mlx"][0].isdigit() and d.versions["mlx-lm"][0].isdigit()
    assert "textual" in d.versions
    slow_blas_on_linux = d.platform.startswith("Linux") and "OpenBLAS" not in d.blas
    assert bool(d.advice) == slow_blas_on_linux
