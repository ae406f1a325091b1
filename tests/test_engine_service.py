"""The typed engine API in-process: jobs, typed events, results, cancel, bad requests, the journal."""

from __future__ import annotations

import threading

import pytest

from optiq_tui.engine import service as service_module
from optiq_tui.engine.client import EngineClient, InProcessClient
from optiq_tui.engine.events import AnswerDelta, Finished, GenStats, StatsUpdate
from optiq_tui.engine.journal import Journal
from optiq_tui.engine.service import BadRequest, EngineService, UnknownJob
from optiq_tui.engine.wire import WireEvent, decode, encode
from optiq_tui.progress import Progress, check_cancel
from optiq_tui.quant.events import LayerScore, StageChanged
from tests.engine_proc import poll

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def client():
    c = InProcessClient()
    yield c
    c.close()


def test_in_process_client_is_an_engine_client(client):
    from optiq_tui.engine.client import engine_line

    assert isinstance(client, EngineClient)
    status = {**client.status(), "uptime_s": 7300, "jobs": [{"id": 1}]}
    assert engine_line(status).endswith("on in-process, up 2 h, 1 job running")


def test_quantize_job_streams_typed_stage_events_and_returns_its_result(client, tiny_llama_dir, optiq_home):
    job = client.quantize(str(tiny_llama_dir), target_bpw=5.5, name="svc")
    assert job.kind == "quantize" and job.state in ("queued", "running")
    events = list(client.events(job.id))
    stages = [(e.stage, e.state) for e in events if isinstance(e, StageChanged)]
    assert ("measure", "done") in stages and ("write", "done") in stages
    assert any(isinstance(e, LayerScore) for e in events)
    done = client.job(job.id)
    assert done.state == "done" and done.result["name"] == "svc"
    assert (optiq_home / "models" / "svc" / "config.json").exists()
    assert [j.id for j in client.jobs()] == [job.id]


def test_chat_answer_is_saved_even_when_nobody_listens(client, tiny_llama_dir):
    from optiq_tui.engine.conversations import ConversationStore

    job = client.chat(str(tiny_llama_dir), "Hello", system="Be brief.",
                      sampler={"temperature": 0.0, "max_tokens": 5})
    done = client.service.wait(job.id, timeout=120)  # not one event read
    assert done.state == "done"
    messages = ConversationStore().load(job.args["conversation"]).messages
    assert [m.role for m in messages] == ["system", "user", "assistant"]
    assert messages[-1].content == done.result["answer"] and messages[-1].stats["gen_tokens"] == 5
    # A follow-up in the same conversation replays it (the same session, so its KV cache too).
    again = client.chat(str(tiny_llama_dir), "More", conversation=job.args["conversation"],
                        sampler={"temperature": 0.0, "max_tokens": 3})
    events = list(client.events(again.id))
    assert any(isinstance(e, AnswerDelta) for e in events) and isinstance(events[-1], Finished)
    assert len(ConversationStore().load(job.args["conversation"]).messages) == 5


@pytest.fixture
def gated(monkeypatch):
    """A job kind that waits at a gate the test opens, then works in steps checking cancel."""
    gate = threading.Event()

    def gated_task(ctx, emit, cancel, *, steps: int = 3):
        emit(Progress("gate", 0, steps))
        gate.wait(60)
        for i in range(steps):
            check_cancel(cancel)
            emit(Progress("gate", i + 1, steps))
        return {"steps": steps}

    monkeypatch.setitem(service_module.KINDS, "gated", (gated_task, "mlx"))
    return gate


def test_cancel_a_running_job_held_at_a_gate(client, gated):
    job = client.submit("gated")
    poll(lambda: client.job(job.id).n_events >= 1, what="the job to reach the gate")
    assert client.job(job.id).state == "running"
    client.cancel(job.id)
    gated.set()
    assert client.wait_for(job.id).state == "cancelled"


def test_a_queued_job_cancelled_never_runs(client, gated):
    first = client.submit("gated", steps=1)
    second = client.submit("gated", steps=2)
    poll(lambda: client.job(first.id).n_events >= 1, what="the first job to reach the gate")
    assert client.job(second.id).state == "queued"  # one MLX thread: jobs run one at a time
    client.cancel(second.id)
    gated.set()
    assert client.wait_for(first.id).result == {"steps": 1}
    second_done = client.wait_for(second.id)
    assert second_done.state == "cancelled" and second_done.n_events == 0


def test_failed_job_reports_one_line(client):
    job = client.quantize("no-such-model")
    done = client.wait_for(job.id)
    assert done.state == "failed" and "no model named" in done.error and "\n" not in done.error


@pytest.mark.parametrize(
    ("kind", "args", "words"),
    [
        ("bogus", {}, "unknown job kind"),
        ("load", {}, "missing argument 'model'"),
        ("load", {"model": 1}, "model must be str"),
        ("chat", {"model": "m", "text": "t", "colour": 1}, "unknown argument 'colour'"),
        ("eval", {"models": "m"}, "models must be list"),
        ("chat", {"model": "m", "text": "t", "save": "yes"}, "save must be bool"),
    ],
)
def test_bad_requests_are_refused_before_anything_runs(kind, args, words):
    service = EngineService()
    try:
        with pytest.raises(BadRequest, match=words):
            service.submit(kind, **args)
        assert service.jobs() == []
        with pytest.raises(UnknownJob):
            service.job(7)
    finally:
        service.close()


def test_events_survive_the_wire_as_their_classes():
    stats = GenStats(ttft_s=0.1, gen_tokens=3)
    for event in (StatsUpdate(stats), Finished("stop", stats), LayerScore("a.b", {4: 0.5, 8: 0.1}, 8),
                  Progress("load", 1, 2, unit="B"), AnswerDelta("hi")):
        assert decode(encode(event)) == event


def test_events_of_mlx_modules_come_back_as_wire_events():
    back = decode({"type": "ModelEvaluated", "row": {"type": "ModelEval", "name": "q"}})
    assert isinstance(back, WireEvent) and back.row.name == "q"


def test_journal_reports_jobs_a_killed_engine_left_running():
    from optiq_tui.settings import paths

    journal = Journal(paths().state / "jobs.jsonl")
    journal.write({"id": 4, "kind": "quantize", "title": "quantize x", "args": {}, "state": "running"})
    journal.write({"id": 3, "kind": "chat", "title": "chat x", "args": {}, "state": "done"})
    with open(journal.path, "a") as f:
        f.write('{"id": 5, "kind": "qu')  # torn by the kill
    service = EngineService(journal=True)
    try:
        assert [j.id for j in service.interrupted] == [4]
        assert service.job(3).state == "done" and service.job(4).state == "interrupted"
        assert service.submit("release").id == 5  # ids go on after the journal's
        service.wait(5)
    finally:
        service.close()
    again = EngineService(journal=True)
    try:
        assert again.interrupted == []  # reported once, by the start that found it
        assert again.job(4).state == "interrupted" and again.job(5).state == "done"
    finally:
        again.close()


def test_import_a_gguf_then_delete_it_as_jobs(client, tiny_llama_dir, tmp_path, optiq_home):
    from gguf import GGMLQuantizationType as Q

    from tests.gguf_files import write_llama_gguf

    write_llama_gguf(tiny_llama_dir, tmp_path / "t.gguf", Q.Q8_0)
    imported = client.wait_for(client.import_gguf(str(tmp_path / "t.gguf"), name="imp").id)
    assert imported.state == "done", imported.error
    assert (optiq_home / "models" / "imp" / "config.json").exists()
    deleted = client.wait_for(client.delete("imp").id)
    assert deleted.state == "done" and deleted.result["freed_bytes"] > 0
    assert not (optiq_home / "models" / "imp").exists()


def test_pull_runs_on_the_io_thread(client, monkeypatch):
    from optiq_tui.library import hub

    threads = []
    monkeypatch.setattr(hub, "pull", lambda repo, **_kw: threads.append(threading.current_thread().name)
                        or type("Info", (), {"to_dict": lambda self: {"repo": repo}})())
    done = client.wait_for(client.pull("org/model").id)
    assert done.result == {"repo": "org/model"} and threads == ["optiq-io"]


def test_compare_turn_as_a_job(client, tiny_llama_dir):
    from optiq_tui.eval.compare import SideEvent

    job = client.compare(str(tiny_llama_dir), str(tiny_llama_dir), "Hi",
                         sampler={"temperature": 0.0, "max_tokens": 3})
    sides = {e.side for e in client.events(job.id) if isinstance(e, SideEvent)}
    done = client.job(job.id)
    assert done.state == "done", done.error
    assert sides == {"a", "b"}
    assert done.result["a"]["answer"] == done.result["b"]["answer"]
    assert done.result["agreement"]["identical"] is True


async def test_async_face_awaits_calls_and_iterates_events(client, tiny_llama_dir):
    from optiq_tui.engine.aclient import AsyncEngine

    engine = AsyncEngine(client)
    job = await engine.submit("chat", model=str(tiny_llama_dir), text="Hi", save=False,
                              sampler={"temperature": 0.0, "max_tokens": 4})
    events = [e async for e in engine.events(job.id)]
    assert isinstance(events[-1], Finished)
    assert (await engine.job(job.id)).state == "done"
    assert [j.id for j in await engine.jobs()] == [job.id]


def test_a_question_that_does_not_fit_is_taken_back_from_the_conversation(client, tiny_llama_dir):
    from optiq_tui.engine.conversations import ConversationStore

    job = client.chat(str(tiny_llama_dir), "word " * 5000, sampler={"max_tokens": 8})
    done = client.wait_for(job.id)
    assert done.state == "failed" and "context" in done.error
    assert ConversationStore().load(job.args["conversation"]).messages == []
    bad = client.wait_for(client.chat(str(tiny_llama_dir), "Hi", sampler={"temp": 0}).id)
    assert bad.state == "failed" and bad.error.startswith("sampler: unknown setting 'temp'")


def test_load_and_release_a_model(client, tiny_llama_dir):
    loaded = client.wait_for(client.load(str(tiny_llama_dir)).id)
    assert loaded.state == "done" and loaded.result["model"] == client.status()["loaded_model"]
    again = client.wait_for(client.load(str(tiny_llama_dir)).id)
    assert again.n_events == 0  # already loaded: not read twice
    released = client.wait_for(client.release().id)
    assert released.result == {"released": loaded.result["model"]}
    assert client.status()["loaded_model"] is None


def test_job_titles_name_models_not_their_folders():
    from optiq_tui.engine.tasks import title

    assert title("chat", {"model": "/home/u/models/tiny-llama"}) == "chat tiny-llama"
    assert title("compare", {"model_a": "/m/a/", "model_b": "b"}) == "compare a vs b"
    assert title("eval", {"models": ["/m/q", "r"]}) == "eval q, r"
    assert title("pull", {"repo": "mlx-community/Qwen3-0.6B-4bit"}) == "pull mlx-community/Qwen3-0.6B-4bit"
