"""The TUI on a real engine process: jobs outlive the TUI (an SSH drop), and the next TUI picks them up.

Each test starts a gated engine (tests/engine_gated.py) on its own OPTIQ_HOME and
kills it at the end; the TUI finds it through its record, as `optiq-chat` does.
"""

from __future__ import annotations

import pytest

from optiq_tui.ui.app import OptiqApp
from optiq_tui.ui.screens.quantize import QuantizeScreen
from optiq_tui.ui.screens.quantize_progress import QuantizeProgressScreen
from optiq_tui.ui.widgets.model_table import ModelTable
from optiq_tui.ui.widgets.sensitivity_chart import SensitivityChart
from tests.engine_proc import kill_engines, start_engine
from tests.ui_util import install_model, library_ready, wait_until

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def engine(optiq_home, tiny_llama_dir, tmp_path, monkeypatch):
    """A gated engine process on the test's home (with the tiny llama); yields the gate file."""
    install_model(tiny_llama_dir, optiq_home, "tiny-llama")
    monkeypatch.delenv("OPTIQ_ENGINE")
    gate = tmp_path / "gate"
    proc = start_engine(optiq_home, "--idle-timeout", "0", gate=gate)
    yield gate
    kill_engines(optiq_home, proc)


async def attached(app, pilot) -> None:
    """The app painted its library and attached to the engine process (not an in-process one)."""
    await wait_until(pilot, lambda: library_ready(app) and app.engine is not None, 60, "the engine")
    assert not app.in_process
    await wait_until(pilot, lambda: "engine pid" in app.library.engine_text, 30, "the engine line")


def engine_jobs():
    from optiq_tui.server.process import connect

    client = connect()
    try:
        return client.jobs()
    finally:
        client.close()


async def test_a_quantize_outlives_the_tui_and_the_next_one_shows_it(engine, optiq_home):
    gate = engine
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await attached(app, pilot)
        await wait_until(pilot, lambda: app.library.query_one(ModelTable).row_count == 1)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuantizeScreen))
        await pilot.press("ctrl+s")
        await wait_until(pilot, lambda: isinstance(app.screen, QuantizeProgressScreen))
        await wait_until(pilot, gate.with_name("gate.reached").exists, 120, "the quantize to reach the gate")
        app.exit()  # as a hang-up does: the TUI goes, the engine's job does not
    [job] = [j for j in engine_jobs() if j.kind == "quantize"]
    assert job.state == "running"

    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await attached(app, pilot)
        # Mounted (it follows the job from on_mount): its widgets are there to query.
        await wait_until(pilot, lambda: isinstance(app.screen, QuantizeProgressScreen) and app.screen.job_running, 30,
                         "the progress view")
        progress = app.screen
        assert progress.state == "running" and progress.info.name == "tiny-llama"
        # Its events were read from the start: the chart has every layer measured before this TUI came.
        await wait_until(pilot, lambda: progress.query_one(SensitivityChart).bars, 30, "the replayed chart")
        gate.touch()
        await wait_until(pilot, lambda: progress.state == "done", 120, "the quantize to finish")
        await pilot.press("enter")
        table = app.library.query_one(ModelTable)
        await wait_until(pilot, lambda: app.screen is app.library and table.row_count == 2, 30, "the new quant")
        assert (optiq_home / "models" / progress.result["name"]).is_dir()


async def test_an_answer_outlives_the_tui_and_is_saved_complete(engine, tiny_llama_dir):
    from optiq_tui.engine.conversations import ConversationStore
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.ui.screens.chat import ChatScreen

    gate = engine
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await attached(app, pilot)
        app.settings.max_tokens, app.settings.temperature, app.settings.seed = 8, 0.0, 0
        screen = ChatScreen(inspect_model(tiny_llama_dir))
        await app.push_screen(screen)
        await wait_until(pilot, lambda: screen.ready is not None, 60, "the model")
        await pilot.press(*"Hello", "enter")
        await wait_until(pilot, gate.with_name("gate.chat").exists, 60, "the answer to start")
        conversation = screen.conversation_id
        assert conversation is not None
        app.exit()  # mid-answer, as a hang-up
    [job] = [j for j in engine_jobs() if j.kind == "chat"]
    assert job.state == "running"

    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await attached(app, pilot)
        # The chat re-opens on the conversation, the answer streaming in from its first token.
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen) and app.screen.generating, 30,
                         "the chat view")
        screen = app.screen
        assert screen.conversation_id == conversation and screen.info.name == "tiny-llama"
        user, answer = screen.transcript.messages
        assert user.role == "user" and user.answer_text == "Hello" and answer.role == "assistant"
        await wait_until(pilot, lambda: answer.answer_text, 30, "the replayed first tokens")
        assert answer.streaming and screen.ready is None and screen.query_one("#prompt").disabled
        assert not screen.query_one("#load-progress").display  # the engine holds the model already
        gate.touch()
        await wait_until(pilot, lambda: not screen.generating and answer.finish_reason, 60, "the answer to finish")
        # Then the model's options are read and the prompt takes the next question.
        await wait_until(pilot, lambda: screen.ready is not None, 60, "the model")
        assert not screen.query_one("#prompt").disabled
    [job] = [j for j in engine_jobs() if j.kind == "chat"]
    assert job.state == "done" and job.result["answer"]
    assert answer.answer_text == job.result["answer"]
    saved = ConversationStore().load(conversation).messages
    assert [(m.role, m.content) for m in saved if m.role != "system"] == [
        ("user", "Hello"), ("assistant", job.result["answer"])]


async def test_an_eval_outlives_the_tui_and_the_next_one_shows_it(engine, optiq_home, tiny_llama_dir, tmp_path):
    from mlx_lm import convert

    from optiq_tui.eval import reports
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.ui.screens.eval import EvalScreen
    from optiq_tui.ui.widgets.eval_table import EvalTable

    convert(str(tiny_llama_dir), str(tmp_path / "tiny-llama-q4"), quantize=True, q_bits=4, q_group_size=64)
    source, quant = inspect_model(optiq_home / "models" / "tiny-llama"), inspect_model(tmp_path / "tiny-llama-q4")
    gate = engine
    app = OptiqApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await attached(app, pilot)
        screen = EvalScreen([quant, source], retrieval=False)
        await app.push_screen(screen)
        await pilot.press("enter")
        await wait_until(pilot, gate.with_name("gate.eval").exists, 120, "the eval's first row")
        app.exit()  # as a hang-up does
    [job] = [j for j in engine_jobs() if j.kind == "eval"]
    assert job.state == "running"

    app = OptiqApp()
    async with app.run_test(size=(120, 40)) as pilot:
        await attached(app, pilot)
        await wait_until(pilot, lambda: isinstance(app.screen, EvalScreen) and app.screen.running, 30, "the eval view")
        screen = app.screen
        assert screen.reference.path == source.path
        assert [m.path for m in screen.models] == [quant.path]
        # Its events were read from the start: the row finished before this TUI came is in the table,
        # the bar shows how far it got.
        table, bar = screen.query_one(EvalTable), screen.query_one("#eval-progress")
        await wait_until(pilot, lambda: table.row_count == 1, 30, "the replayed row")
        assert bar.display and bar.total and bar.progress > 0
        assert "tiny-llama" in str(screen.query_one("#eval-status").render())
        gate.touch()
        await wait_until(pilot, lambda: screen.report is not None, 120, "the eval to finish")
        assert table.row_count == 2 and not screen.running
        assert "saved to" in str(screen.query_one("#eval-status").render())
    [job] = [j for j in engine_jobs() if j.kind == "eval"]
    assert job.state == "done"
    stored = reports.load_report(job.result["saved"])
    assert [r.name for r in stored.rows] == [source.name, quant.name] == [r.name for r in screen.report.rows]


async def test_about_names_the_engine_and_its_openai_address(engine):
    from optiq_tui.server import state
    from optiq_tui.ui.screens.about import AboutScreen

    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await attached(app, pilot)
        app.push_screen(AboutScreen())
        await wait_until(pilot, lambda: isinstance(app.screen, AboutScreen) and app.screen.api_text, 30, "About")
        record = state.read_record()
        assert app.screen.api_text == f"{record.address}/v1 · no key (loopback only)"
        assert app.screen.engine_text.startswith(f"engine pid {record.pid} on {record.address}")
