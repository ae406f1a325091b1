"""The headless library commands: list, import, rm, pull, demo."""

from __future__ import annotations

import io
import json
import shutil

import pytest

from optiq_tui.cli import main
from optiq_tui.settings import paths
from tests.gguf_files import Q, write_llama_gguf


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def test_list_empty_and_populated(tiny_llama_dir, capsys):
    assert main(["list"]) == 0
    assert "no models yet" in capsys.readouterr().out
    shutil.copytree(tiny_llama_dir, paths().models / "tiny")
    (paths().models / "broken").mkdir()
    assert main(["list", "--json"]) == 0
    out = _json(capsys)
    assert [m["name"] for m in out["models"]] == ["tiny"]
    assert out["models"][0]["quant"] == "fp16" and out["models"][0]["n_params"] > 0
    assert out["skipped"][0]["reason"].startswith("broken: no config.json")
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    assert "tiny" in text and "fp16" in text and "skipped" in text


def test_import_then_rm(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    gguf = tmp_path / "tiny.Q8_0.gguf"
    write_llama_gguf(tiny_llama_dir, gguf, Q.Q8_0)
    assert main(["import", str(gguf), "--name", "imported", "--json"]) == 0
    info = _json(capsys)
    assert info["name"] == "imported" and info["quant"] == "GGUF Q8_0 → fp16"

    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal: no prompt, needs --yes
    assert main(["rm", "imported"]) == 1
    assert "pass --yes" in capsys.readouterr().err
    assert (paths().models / "imported").exists()

    assert main(["rm", "imported", "--yes", "--json"]) == 0
    out = _json(capsys)
    assert out["deleted"] == "imported" and out["freed_bytes"] == info["size_bytes"]
    assert not (paths().models / "imported").exists()


def test_rm_asks_on_a_terminal(tiny_llama_dir, capsys, monkeypatch):
    shutil.copytree(tiny_llama_dir, paths().models / "tiny")

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty("n\n"))
    assert main(["rm", "tiny"]) == 1
    assert (paths().models / "tiny").exists()
    monkeypatch.setattr("sys.stdin", Tty("y\n"))
    assert main(["rm", "tiny"]) == 0
    assert "freed" in capsys.readouterr().out
    assert not (paths().models / "tiny").exists()


def test_errors_are_clear_and_exit_nonzero(tmp_path, capsys):
    bad = tmp_path / "x.gguf"
    bad.write_text("nope")
    assert main(["import", str(bad), "--json"]) == 1
    captured = capsys.readouterr()
    assert "not a GGUF file" in json.loads(captured.out)["error"]
    assert captured.err.startswith("error: ")
    assert main(["rm", "missing", "--yes"]) == 1
    assert "no model named 'missing'" in capsys.readouterr().err
    assert main(["pull", "someone/model"]) == 1  # tests run with HF_HUB_OFFLINE=1
    assert "HF_HUB_OFFLINE" in capsys.readouterr().err
    assert list(paths().models.iterdir()) == []


@pytest.mark.demo
def test_demo_then_list(demo_wheel_dir, capsys, monkeypatch):
    from optiq_tui.library.demo import DEMO_NAME, WHEEL_DIR_ENV

    monkeypatch.setenv(WHEEL_DIR_ENV, str(demo_wheel_dir))
    assert main(["demo", "--json"]) == 0
    assert _json(capsys)["name"] == DEMO_NAME
    assert main(["list", "--json"]) == 0
    [model] = _json(capsys)["models"]
    assert model["name"] == DEMO_NAME and model["quant_kind"] == "gguf"
