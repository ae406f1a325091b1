from __future__ import annotations

from pathlib import Path

import pytest

from tests.tiny import build_tiny_llama, build_tiny_qwen3


@pytest.fixture(autouse=True)
def optiq_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own app folder; nothing touches the user's files or the HF cache."""
    home = tmp_path / "optiq-home"
    monkeypatch.setenv("OPTIQ_HOME", str(home))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return home


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory) -> Path:
    return build_tiny_qwen3(tmp_path_factory.mktemp("tiny") / "tiny-qwen3")
