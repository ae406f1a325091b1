"""The engine process: remote client, record, --status/--stop, idle exit, jobs that outlive clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from optiq_tui.engine.events import AnswerDelta, Finished
from optiq_tui.quant.events import StageChanged
from tests.engine_proc import at_a_terminal, engine_env, kill_engines, poll, record, start_engine

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def engines(optiq_home, monkeypatch):
    """Start engines with ``engines.start(...)``; every one is killed at the end of the test."""
    monkeypatch.delenv("OPTIQ_ENGINE")
    started = []

    class Engines:
        def start(self, *args, **kwargs):
            proc = start_engine(optiq_home, "--idle-timeout", "0", *args, **kwargs)
            started.append(proc)
            return proc

    yield Engines()
    kill_engines(optiq_home, *started)


def _client():
    from optiq_tui.server.process import connect

    client = connect()
    assert client is not None
    return client


def _cli(*args, **popen):
    return subprocess.Popen([sys.executable, "-m", "optiq_tui", *args], env=engine_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=at_a_terminal, **popen)


def test_remote_chat_streams_typed_deltas_and_saves_the_answer(engines, tiny_llama_dir):
    from optiq_tui.engine.conversations import ConversationStore

    engines.start()
    client = _client()
    job = client.chat(str(tiny_llama_dir), "Hello", sampler={"temperature": 0.0, "max_tokens": 6})
    events = list(client.events(job.id))
    assert any(isinstance(e, AnswerDelta) for e in events)
    assert isinstance(events[-1], Finished)
    done = client.job(job.id)
    assert done.state == "done" and done.result["answer"]
    saved = ConversationStore().load(done.args["conversation"]).messages
    assert [m.role for m in saved] == ["user", "assistant"]
    assert saved[-1].content == done.result["answer"]


def test_status_and_stop(engines):
    proc = engines.start()
    status = _cli("serve", "--status")
    out, _ = status.communicate(timeout=60)
    assert status.returncode == 0
    assert f"engine pid {proc.pid} on {record(_home())['address']}, up" in out and "0 jobs running" in out
    jobs = _cli("jobs")
    out, _ = jobs.communicate(timeout=60)
    assert jobs.returncode == 0 and out.strip() == "no jobs"
    stop = _cli("serve", "--stop")
    stop.communicate(timeout=60)
    assert stop.returncode == 0
    assert proc.wait(30) == 0
    again = _cli("serve", "--status")
    again.communicate(timeout=60)
    assert again.returncode != 0


def _home():
    from pathlib import Path

    return Path(os.environ["OPTIQ_HOME"])


def test_a_second_engine_for_the_same_home_refuses(engines):
    engines.start()
    second = _cli("serve", "--idle-timeout", "0")
    _out, err = second.communicate(timeout=60)
    assert second.returncode == 1 and "already runs" in err


def test_stale_record_of_a_killed_engine_is_cleared(engines):
    from optiq_tui.server.process import connect

    proc = engines.start()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert record(_home())["pid"] == proc.pid  # the killed engine could not clear it
    assert connect() is None
    assert record(_home()) is None


def test_idle_engine_exits_by_itself(optiq_home, monkeypatch):
    monkeypatch.delenv("OPTIQ_ENGINE")
    proc = _cli("serve", "--idle-timeout", "0.5")
    try:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        assert "no client and no job for 0.5 s: stopping" in out
        assert record(optiq_home) is None
    finally:
        kill_engines(optiq_home, proc)


def test_headless_command_starts_a_background_engine(engines, optiq_home, tiny_llama_dir):
    try:
        run = _cli("run", str(tiny_llama_dir), "Hi", "--max-tokens", "3", "--temp", "0", "--json")
        out, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        assert json.loads(out)["finish_reason"] in ("length", "stop")
        assert record(optiq_home) is not None
        assert [j.kind for j in _client().jobs()] == ["chat"]
    finally:
        kill_engines(optiq_home)


def test_hung_up_quantize_leaves_its_job_running(engines, optiq_home, tiny_llama_dir, tmp_path):
    gate = tmp_path / "gate"
    engines.start(gate=gate)
    quantize = _cli("quantize", str(tiny_llama_dir), "--target-bpw", "5.5", "--name", "hup",
                    start_new_session=True)
    poll(lambda: gate.with_name("gate.reached").exists(), 120, "quantize to reach the gate")
    os.killpg(quantize.pid, signal.SIGHUP)
    assert quantize.wait(30) == -signal.SIGHUP
    client = _client()
    [job] = client.jobs()
    assert job.state == "running"
    gate.touch()
    assert client.wait_for(job.id).state == "done"
    assert (optiq_home / "models" / "hup" / "config.json").exists()


def test_ctrl_c_still_cancels_the_job(engines, optiq_home, tiny_llama_dir, tmp_path):
    gate = tmp_path / "gate"
    engines.start(gate=gate)
    quantize = _cli("quantize", str(tiny_llama_dir), "--target-bpw", "5.5", "--name", "int",
                    start_new_session=True)
    poll(lambda: gate.with_name("gate.reached").exists(), 120, "quantize to reach the gate")
    os.killpg(quantize.pid, signal.SIGINT)
    [job] = _client().jobs()
    poll(lambda: _client().job(job.id).cancel_requested, what="the client to cancel its job")
    gate.touch()  # the job sees the cancel as soon as the gate lets it go on
    _out, err = quantize.communicate(timeout=60)
    assert quantize.returncode == 130, err
    assert _client().jobs()[0].state == "cancelled"
    assert not (optiq_home / "models" / "int").exists()


def test_engine_killed_mid_quantize_then_recovery(engines, optiq_home, tiny_llama_dir, tmp_path):
    gate = tmp_path / "gate"
    proc = engines.start(gate=gate)
    client = _client()
    job = client.quantize(str(tiny_llama_dir), target_bpw=5.5, name="k")
    poll(lambda: gate.with_name("gate.reached").exists(), 120, "quantize to reach the gate")
    staged = list((optiq_home / ".staging").iterdir())
    assert staged  # the model was written to staging, not yet moved into the library
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert not (optiq_home / "models" / "k").exists()

    engines.start()
    client = _client()
    status = client.status()
    assert [j["id"] for j in status["interrupted"]] == [job.id]
    assert client.job(job.id).state == "interrupted"
    assert not any(p.exists() for p in staged)  # the half-made folder was cleared
    rerun = client.quantize(str(tiny_llama_dir), target_bpw=5.5, name="k")
    stages = [e for e in client.events(rerun.id) if isinstance(e, StageChanged)]
    done = client.job(rerun.id)
    assert done.state == "done", done.error
    assert done.result["cache_hit"] is True  # the measurement the killed run cached
    assert ("write", "done") in [(s.stage, s.state) for s in stages]
    assert (optiq_home / "models" / "k" / "config.json").exists()


async def test_async_face_over_the_remote_client(engines, tiny_llama_dir):
    from optiq_tui.engine.aclient import AsyncEngine

    engines.start()
    engine = AsyncEngine(_client())
    job = await engine.submit("chat", model=str(tiny_llama_dir), text="Hi", save=False,
                              sampler={"temperature": 0.0, "max_tokens": 4})
    events = [e async for e in engine.events(job.id)]
    assert any(isinstance(e, AnswerDelta) for e in events) and isinstance(events[-1], Finished)
    assert (await engine.status())["pid"] == record(_home())["pid"]


def test_jobs_follow_reattaches_to_a_running_quantize(engines, optiq_home, tiny_llama_dir, tmp_path):
    gate = tmp_path / "gate"
    engines.start(gate=gate)
    job = _client().quantize(str(tiny_llama_dir), target_bpw=5.5, name="f")
    poll(lambda: gate.with_name("gate.reached").exists(), 120, "quantize to reach the gate")
    follow = _cli("jobs", "--follow", str(job.id))
    gate.touch()
    out, err = follow.communicate(timeout=120)
    assert follow.returncode == 0, err
    assert "measure: done" in err and "verify: done" in err
    assert json.loads(out)["name"] == "f"


def test_remote_quantize_events_arrive_as_their_classes(engines, tiny_llama_dir):
    from optiq_tui.progress import Log
    from optiq_tui.quant.events import LayerScore

    engines.start()
    client = _client()
    job = client.quantize(str(tiny_llama_dir), target_bpw=5.5, name="wire", verify=False)
    events = list(client.events(job.id))
    scores = [e for e in events if isinstance(e, LayerScore)]
    assert scores and all(isinstance(b, int) for s in scores for b in s.kl_by_bits)
    assert any(isinstance(e, StageChanged) for e in events) and any(isinstance(e, Log) for e in events)
    assert client.job(job.id).result["name"] == "wire"
    # Replaying from a later point gives the rest, the same objects.
    assert list(client.events(job.id, after=3)) == events[3:]


def test_hung_up_client_mid_answer_the_answer_is_saved_complete(engines, tiny_llama_dir, tmp_path):
    from optiq_tui.engine.conversations import ConversationStore

    gate = tmp_path / "gate"
    engines.start(gate=gate)
    script = ("import sys; from optiq_tui.server.process import connect; c = connect(); "
              f"job = c.chat({str(tiny_llama_dir)!r}, 'Hello', sampler={{'temperature': 0.0, 'max_tokens': 8}}); "
              "print(job.id, flush=True); [print(type(e).__name__, flush=True) for e in c.events(job.id)]")
    client = subprocess.Popen([sys.executable, "-c", script], env=engine_env(), stdout=subprocess.PIPE,
                              text=True, start_new_session=True, preexec_fn=at_a_terminal)
    job_id = int(client.stdout.readline())
    poll(lambda: gate.with_name("gate.chat").exists(), 120, "the answer to start")
    os.killpg(client.pid, signal.SIGHUP)
    assert client.wait(30) == -signal.SIGHUP
    gate.touch()
    done = _client().wait_for(job_id)
    assert done.state == "done" and done.result["finish_reason"] in ("stop", "length")
    saved = ConversationStore().load(done.args["conversation"]).messages
    assert saved[-1].role == "assistant" and saved[-1].content == done.result["answer"]
