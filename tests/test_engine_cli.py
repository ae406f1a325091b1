"""Headless `optiq-chat run`, `doctor` and `conversations`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optiq_tui.cli import main
from optiq_tui.engine.conversations import ConversationStore


def test_run_json_prints_answer_reasoning_stats_and_reason(tiny_qwen3_dir, capsys):
    code = main(["run", str(tiny_qwen3_dir), "Hello", "--json", "--temp", "0", "--max-tokens", "6", "--effort", "off"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "think" and out["effort"] == "off"
    assert out["finish_reason"] in ("stop", "length")
    assert set(out) >= {"answer", "reasoning", "stats", "finish_reason"}
    assert out["stats"]["gen_tokens"] >= 1 and out["stats"]["prompt_tokens"] > 0
    assert out["stats"]["ttft_s"] > 0


def test_run_streams_the_answer_to_stdout_and_stats_to_stderr(tiny_llama_dir, capsys):
    code = main(["run", str(tiny_llama_dir), "Hello", "--temp", "0", "--max-tokens", "5", "--seed", "1"])
    assert code == 0
    captured = capsys.readouterr()
    assert "gen " in captured.err and "tok/s" in captured.err and "TTFT" in captured.err


def test_run_unknown_model_is_a_clear_error(capsys):
    assert main(["run", "no-such-model", "Hi"]) == 1
    assert "error: no model named 'no-such-model'" in capsys.readouterr().err


def test_doctor_json(capsys):
    assert main(["doctor", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"backend", "blas", "memory_available_bytes", "versions", "advice"} <= set(out)


def test_conversations_list_show_export_rm(tmp_path, capsys):
    store = ConversationStore()
    cid = store.create(model="tiny", title="Capitals")
    store.append(cid, "user", "Capital of France?")
    store.append(cid, "assistant", "Paris.")

    assert main(["conversations", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(c["id"], c["n_messages"]) for c in listed] == [(cid, 2)]

    assert main(["conversations", "show", cid]) == 0
    assert "Paris." in capsys.readouterr().out

    target = tmp_path / "out.md"
    assert main(["conversations", "export", cid, "-o", str(target)]) == 0
    assert target.read_text().startswith("# Capitals")
    capsys.readouterr()

    assert main(["conversations", "rm", cid]) == 0
    assert main(["conversations", "show", cid]) == 1
    assert "no conversation" in capsys.readouterr().err


@pytest.mark.demo
def test_demo_answers_paris(demo_model_dir):
    """The real SmolLM2-135M answers a factual question through the installed CLI."""
    env = dict(os.environ)
    models = Path(env["OPTIQ_HOME"]) / "models"
    models.mkdir(parents=True, exist_ok=True)
    from optiq_tui.library.demo import DEMO_NAME

    (models / DEMO_NAME).symlink_to(demo_model_dir, target_is_directory=True)
    result = subprocess.run(
        [sys.executable, "-m", "optiq_tui", "run", "demo", "What is the capital of France?", "--json",
         "--temp", "0", "--max-tokens", "40"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert "Paris" in out["answer"]
    assert out["finish_reason"] in ("stop", "length")
    assert out["stats"]["gen_tps"] > 0 and out["stats"]["rss_bytes"] > 0


def test_ctrl_c_while_the_job_is_being_submitted_cancels_it(tiny_llama_dir, monkeypatch):
    # The engine can start a job before the submit call returns (CI caught this window once:
    # the command died of the KeyboardInterrupt and left the quantize running in the engine).
    import signal
    import threading

    from optiq_tui.commands._engine import submit_and_follow
    from optiq_tui.engine.client import InProcessClient
    from tests.engine_proc import poll
    from tests.ui_util import hold_job

    gate = hold_job(monkeypatch, "quantize")
    engine = InProcessClient()

    def submit():
        job = engine.quantize(str(tiny_llama_dir), name="interrupted", verify=False)
        assert gate.reached.wait(60)  # the engine runs it already
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C before this client knows the job's id
        return job

    def open_when_cancelled():
        poll(gate.cancel_requested, what="the cancel")
        gate.open()

    threading.Thread(target=open_when_cancelled, daemon=True).start()
    try:
        job = submit_and_follow(engine, submit, None)
    finally:
        gate.open()
        engine.close()
    assert job.state == "cancelled"
