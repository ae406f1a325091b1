from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests import engine_proc
from tests.tiny import build_tiny_llama, build_tiny_qwen3


@pytest.fixture(autouse=True)
def optiq_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own app folder; nothing touches the user's files or the HF cache."""
    home = tmp_path / "optiq-home"
    monkeypatch.setenv("OPTIQ_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Headless commands run their jobs in-process here; tests/test_server_*.py start real engines.
    monkeypatch.setenv("OPTIQ_ENGINE", "in-process")
    return home


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "tiny-qwen3")


@pytest.fixture(scope="session")
def tiny_gpt_oss_dir(tmp_path_factory) -> Path:
    """A tiny random gpt_oss model with the real 201,088-token o200k_harmony vocabulary."""
    from tests.tiny import build_tiny_gpt_oss

    return build_tiny_gpt_oss(tmp_path_factory.mktemp("tiny") / "tiny-gpt-oss")


@pytest.fixture(scope="session")
def demo_wheel_dir() -> Path:
    """Where tests keep the demo wheel (OPTIQ_DEMO_WHEEL_DIR, default ~/.cache/optiq-tui-test-wheels),
    so repeated runs download it only once, from the package registry."""
    import os

    from optiq_tui.library.demo import WHEEL_DIR_ENV

    return Path(os.environ.get(WHEEL_DIR_ENV) or "~/.cache/optiq-tui-test-wheels").expanduser()


@pytest.fixture(scope="session")
def demo_model_dir(tmp_path_factory, demo_wheel_dir) -> Path:
    """The real demo model (SmolLM2-135M-Instruct from its GGUF), built once per session
    into a session OPTIQ_HOME. Tests using this are marked `@pytest.mark.demo`."""
    from optiq_tui.library.demo import WHEEL_DIR_ENV, ensure_demo

    home = tmp_path_factory.mktemp("demo-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTIQ_HOME", str(home))
        mp.setenv(WHEEL_DIR_ENV, str(demo_wheel_dir))
        return ensure_demo().path


ENGINE_KINDS = ("in-process", "process")


@pytest.fixture(params=ENGINE_KINDS)
def engine_kind(request, optiq_home, monkeypatch) -> Iterator[str]:
    """Runs a UI test against both clients: the in-process engine, and an engine process on the
    test's OPTIQ_HOME (the TUI finds it through its record), killed at teardown so none outlives it."""
    if request.param == "in-process":
        yield request.param
        return
    monkeypatch.delenv("OPTIQ_ENGINE")
    proc = engine_proc.start_engine(optiq_home, "--idle-timeout", "0")
    try:
        yield request.param
    finally:
        engine_proc.kill_engines(optiq_home, proc)
