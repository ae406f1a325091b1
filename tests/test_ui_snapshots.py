"""Snapshots (pytest-textual-snapshot) of the screens and dialogs at 80×24 and 120×40, with real content.

The models are real tiny ones (tests/snapshot_homes.py) and the answers are
real greedy generations; only what changes from run to run is frozen: timings
and memory figures in the stats lines, free memory in compare's plan, the
home folder (shown as ``~``), and sizes on disk count the weights only (a
quant's sidecar holds its timings and the build folder's path). Update with ``pytest tests/test_ui_snapshots.py
--snapshot-update`` and look at the SVGs (``snapshot_report.html``).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest

from optiq_tui.ui.app import OptiqApp
from tests.snapshot_homes import SOURCE, build_library
from tests.ui_util import wait_until

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]
UNIFORM, OPTIQ = f"{SOURCE}-uniform-4bit", f"{SOURCE}-optiq-5.0bpw"
# Figures that differ from run to run; token counts stay real.
FROZEN = dict(ttft_s=0.21, prompt_tps=1958.0, gen_tps=412.5, mlx_active_bytes=290_000_000,
              mlx_peak_bytes=310_000_000, rss_bytes=420_000_000, elapsed_s=1.0)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("snap") / "home"
    # Module fixtures run before the per-test OPTIQ_HOME: the quants must land in this home.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTIQ_HOME", str(home))
        build_library(home)
    return home / "models"


@pytest.fixture(autouse=True)
def steady_cursor(monkeypatch) -> None:
    """A blinking cursor would be on or off depending on when the shot is taken."""
    from textual.widgets import Input

    monkeypatch.setattr(Input, "_toggle_cursor", lambda self: setattr(self, "_cursor_visible", True))


@pytest.fixture
def home(built, optiq_home, monkeypatch) -> Path:
    """A fresh app folder with the built models; the stats lines and free memory frozen."""
    from optiq_tui.engine import loader
    from optiq_tui.library import catalog
    from optiq_tui.ui.widgets.stats_line import StatsLine

    shutil.copytree(built, optiq_home / "models")
    monkeypatch.setattr(
        catalog.mf, "folder_size", lambda folder: sum(f.stat().st_size for f in Path(folder).glob("*.safetensors"))
    )
    monkeypatch.setenv("HOME", str(optiq_home.parent))
    monkeypatch.setattr(loader, "available_memory", lambda: (16 * 10**9, "available system memory"))
    show = StatsLine.show_stats

    def frozen(self, stats, *, live):
        show(self, dataclasses.replace(stats, **FROZEN), live=live)

    monkeypatch.setattr(StatsLine, "show_stats", frozen)
    return optiq_home


def info(name: str):
    from optiq_tui.library.catalog import resolve

    return resolve(name)


async def library_loaded(pilot, highlight: str | None = None) -> None:
    from optiq_tui.ui.widgets.model_table import ModelTable

    app = pilot.app
    await wait_until(pilot, lambda: app.library.catalog is not None, 30, "the library scan")
    await wait_until(pilot, lambda: app.library.engine_text, 30, "the engine line")
    if highlight:
        table = app.library.query_one(ModelTable)
        table.set_models(table.models, highlight=highlight)
        await wait_until(pilot, lambda: table.highlighted_model and table.highlighted_model.name == highlight)
    await pilot.pause()


def settle(app: OptiqApp, max_tokens: int = 16) -> None:
    app.settings.temperature = 0.0
    app.settings.max_tokens = max_tokens
    app.settings.seed = 0


# ---- library ------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_library(snap_compare, home, size):
    async def run_before(pilot):
        await library_loaded(pilot, highlight=OPTIQ)

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_library_first_run(snap_compare, optiq_home, monkeypatch, size):
    monkeypatch.setenv("HOME", str(optiq_home.parent))

    async def run_before(pilot):
        await library_loaded(pilot)

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


# ---- chat -----------------------------------------------------------------------


ANSWER = """The capital of France is **Paris**.

- It lies on the Seine, in the north of the country.
- About 2.1 million people live in the city itself."""


async def chat_turn(pilot):
    """A finished turn: a recorded answer replayed through the model's tokenizer and parser,
    in place of the model's generation inside the engine's chat job."""
    from optiq_tui.engine.events import Finished
    from optiq_tui.engine.session import ChatSession
    from optiq_tui.ui.screens.chat import ChatScreen
    from tests.replay import replay_generate

    def with_prompt(event):
        # The replay does not prefill; give its final stats a prompt like a real turn's.
        if isinstance(event, Finished):
            event = Finished(event.reason, dataclasses.replace(event.stats, prompt_tokens=53))
        return event

    app = pilot.app
    settle(app)
    await library_loaded(pilot)
    screen = ChatScreen(info(SOURCE))
    await app.push_screen(screen)
    await wait_until(pilot, lambda: screen.ready is not None, 60, "the model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ChatSession, "generate", replay_generate(ANSWER, edit=with_prompt))
        await pilot.press(*"What is the capital of France?", "enter")
        await wait_until(pilot, lambda: screen.transcript.last("assistant") is not None
                         and not screen.generating, 60, "the answer")
    await pilot.pause()
    return screen


@pytest.mark.parametrize("size", SIZES)
def test_chat_finished_turn(snap_compare, home, size):
    assert snap_compare(OptiqApp(), terminal_size=size, run_before=chat_turn)


REASONING = """The user asks for the capital of France. That is Paris, on the Seine.
I should answer in one line and add one fact."""


@pytest.mark.parametrize("size", SIZES)
def test_chat_reasoning_panel_open(snap_compare, home, size):
    """A thinking model's turn with its reasoning opened (the panel's title keeps the token count)."""
    from optiq_tui.ui.widgets.chat_message import ChatMessage
    from optiq_tui.ui.widgets.reasoning_panel import ReasoningPanel

    async def run_before(pilot):
        screen = await chat_turn(pilot)
        await screen.transcript.mount(ChatMessage("user", "And in one line?"))
        message = ChatMessage("assistant", "Paris, the capital of France, lies on the Seine.",
                              label=SOURCE, reasoning=REASONING, reasoning_tokens=31)
        await screen.transcript.mount(message)
        panel = message.query_one(ReasoningPanel)
        panel.collapsed = False
        await pilot.pause()
        screen.transcript.scroll_end(animate=False)
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_about(snap_compare, home, monkeypatch, size):
    """The About screen with the engine's diagnostics; the machine's own figures are fixed."""
    from optiq_tui.engine import diagnostics

    fixed = diagnostics.Diagnostics(
        backend="cpu", device="cpu", blas="OpenBLAS", memory_available_bytes=16 * 10**9,
        memory_source="available system memory", memory_total_bytes=32 * 10**9, platform="Linux x86_64",
        python="3.11", versions={"mlx": "0.x", "mlx-lm": "0.x", "textual": "8.x"},
        advice=["Start with OpenBLAS preloaded for faster float32 on Linux CPU."])
    monkeypatch.setattr(diagnostics, "doctor", lambda: fixed)

    async def run_before(pilot):
        from optiq_tui.ui.screens.about import AboutScreen

        await library_loaded(pilot)
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, AboutScreen)
                         and pilot.app.screen.diagnostics is not None, 30, "the diagnostics")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_chat_sampler_dialog(snap_compare, home, size):
    async def run_before(pilot):
        await chat_turn(pilot)
        await pilot.press("ctrl+s")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


# ---- compare --------------------------------------------------------------------


async def compare_turn(pilot, *, blind: bool, vote: str | None = None):
    from optiq_tui.ui.screens.compare import CompareScreen

    app = pilot.app
    settle(app)
    await library_loaded(pilot)
    screen = CompareScreen(info(UNIFORM), info(OPTIQ), blind=blind, seed=1)
    await app.push_screen(screen)
    await wait_until(pilot, lambda: screen.ready, 60, "both models")
    await pilot.press(*"What is the capital of France?", "enter")
    await wait_until(pilot, lambda: screen.result is not None and not screen.running, 120, "both answers")
    if vote:
        await pilot.press(vote)
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_compare_agreement_and_kl(snap_compare, home, size):
    async def run_before(pilot):
        await compare_turn(pilot, blind=False)

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_compare_blind_before_the_vote(snap_compare, home, size):
    async def run_before(pilot):
        await compare_turn(pilot, blind=True)

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_compare_blind_tally_after_the_vote(snap_compare, home, size):
    async def run_before(pilot):
        await compare_turn(pilot, blind=True, vote="l")

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


def hold_compare_turn(monkeypatch):
    """The next compare turn waits after its first token until the returned gate opens;
    ``held`` gets the turn's cancel flag (the prepare job that loads the pair is not held)."""
    import functools
    import threading

    from optiq_tui.engine import service
    from optiq_tui.engine.events import TextDelta
    from optiq_tui.eval.compare import SideEvent

    gate, reached, held = threading.Event(), threading.Event(), {}
    task, thread = service.KINDS["compare"]

    @functools.wraps(task)  # the engine checks arguments against the task's signature
    def gated(ctx, emit, cancel, **args):
        if args.get("prompt") is None or reached.is_set():
            return task(ctx, emit, cancel, **args)
        held["cancel"] = cancel

        def gated_emit(event):
            emit(event)
            if isinstance(event, SideEvent) and isinstance(event.event, TextDelta) and not reached.is_set():
                reached.set()
                gate.wait(120)

        return task(ctx, gated_emit, cancel, **args)

    monkeypatch.setitem(service.KINDS, "compare", (gated, thread))
    return gate, reached, held


@pytest.mark.parametrize("size", SIZES)
def test_compare_stopped_says_why_no_kl(snap_compare, home, monkeypatch, size):
    """Esc during the answers: both sides stop, and the findings say why there is no agreement or KL."""
    from optiq_tui.ui.screens.compare import CompareScreen

    import random
    import types

    from optiq_tui.eval import compare

    gate, reached, held = hold_compare_turn(monkeypatch)
    # The sides step in a random order each round (so blind mode reveals nothing): seeded here,
    # so the same side has its first token when the stop comes.
    monkeypatch.setattr(compare, "random", types.SimpleNamespace(Random=lambda: random.Random(0)))

    async def run_before(pilot):
        app = pilot.app
        settle(app)
        await library_loaded(pilot)
        screen = CompareScreen(info(UNIFORM), info(OPTIQ), blind=False, seed=1)
        await app.push_screen(screen)
        await wait_until(pilot, lambda: screen.ready, 60, "both models")
        await pilot.press(*"What is the capital of France?", "enter")
        await wait_until(pilot, reached.is_set, 60, "the first token")
        await pilot.press("escape")
        await wait_until(pilot, lambda: held["cancel"].is_set(), 30, "the stop request")
        gate.set()
        await wait_until(pilot, lambda: screen.result is not None and not screen.running, 60, "both sides stopped")
        await pilot.pause()

    try:
        assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)
    finally:
        gate.set()


# ---- quantize -------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_quantize_form(snap_compare, home, size):
    from optiq_tui.ui.screens.quantize import QuantizeScreen

    async def run_before(pilot):
        await library_loaded(pilot, highlight=SOURCE)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, QuantizeScreen))
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


# ---- eval, dialogs, saved conversations -------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_eval_table(snap_compare, home, monkeypatch, size):
    """A real quick eval of both quants against their source (retrieval probe off: minutes on CPU)."""
    from optiq_tui.eval import reports
    from optiq_tui.ui.screens.eval import EvalScreen

    # The saved report's file name holds the date and time: saved under a fixed name instead.
    save = reports.save_report

    def saved_as_report_json(report):
        path = save(report)
        return path.rename(path.with_name("report.json"))

    monkeypatch.setattr(reports, "save_report", saved_as_report_json)

    async def run_before(pilot):
        await library_loaded(pilot)
        screen = EvalScreen([info(UNIFORM), info(OPTIQ)], retrieval=False)
        await pilot.app.push_screen(screen)
        await wait_until(pilot, lambda: screen.reference is not None, 30, "the reference")
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.report is not None, 300, "the eval")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_eval_before_the_run(snap_compare, home, size):
    """The set-up: what will run, how long the retrieval probe takes (said before it starts),
    and why the figures are not the quantize summary's."""
    from optiq_tui.ui.screens.eval import EvalScreen

    async def run_before(pilot):
        await library_loaded(pilot)
        screen = EvalScreen([info(UNIFORM), info(OPTIQ)], retrieval=True)
        await pilot.app.push_screen(screen)
        await wait_until(pilot, lambda: screen.reference is not None, 30, "the reference")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_library_help_and_delete_dialogs(snap_compare, home, size):
    async def run_before(pilot):
        await library_loaded(pilot, highlight=UNIFORM)
        await pilot.press("delete")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


SIZES_AND_100 = SIZES + [pytest.param((100, 30), id="100x30")]


@pytest.mark.parametrize("size", SIZES_AND_100)
def test_library_hub_download_dialog(snap_compare, home, size):
    """The prompt wraps inside the box (it was cut at 100 columns)."""

    async def run_before(pilot):
        await library_loaded(pilot)
        await pilot.press("d")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_conversations_list(snap_compare, home, monkeypatch, size):
    from optiq_tui.engine import conversations
    from optiq_tui.ui.screens.conversations import ConversationsScreen

    store = conversations.ConversationStore()
    for hour, title in ((20, "What is the capital of France?"), (21, "Write a haiku about quantization")):
        # Fixed times, one hour apart: the list's order and dates do not depend on the clock.
        monkeypatch.setattr(conversations, "_now", lambda hour=hour: f"2026-11-30T{hour}:00:00+00:00")
        cid = store.create(model=SOURCE, title=title)
        store.append(cid, "user", title)
        store.append(cid, "assistant", "…", model=SOURCE)

    async def run_before(pilot):
        await library_loaded(pilot)
        await pilot.app.push_screen(ConversationsScreen())
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_library_keys_help(snap_compare, home, size):
    async def run_before(pilot):
        await library_loaded(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_model_picker(snap_compare, home, size):
    from optiq_tui.ui.screens.model_picker import ModelPickerModal

    async def run_before(pilot):
        await library_loaded(pilot)
        await pilot.app.push_screen(ModelPickerModal("Model A"))
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_command_palette(snap_compare, home, size):
    """ctrl+p, searched: the library's action by name and its key binding, each with its key.

    Searched, because with no query the providers' lists arrive in either order."""
    from textual.command import CommandList, CommandPalette

    async def run_before(pilot):
        await library_loaded(pilot)
        await pilot.press("ctrl+p")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
        await pilot.press(*"quantize")
        await wait_until(pilot, lambda: pilot.app.screen.query_one(CommandList).option_count >= 2, 30, "the hits")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_conversation_export_dialog(snap_compare, home, monkeypatch, size):
    """The export dialog names the one folder every export goes to (its input shows only the path's end)."""
    from optiq_tui.engine import conversations
    from optiq_tui.settings import paths
    from optiq_tui.ui.screens.conversations import ConversationsScreen

    store = conversations.ConversationStore()
    monkeypatch.setattr(conversations, "_now", lambda: "2026-11-30T20:00:00+00:00")
    cid = store.create(model=SOURCE, title="What is the capital of France?")
    store.append(cid, "user", "What is the capital of France?")
    # The default file name holds the conversation's id (made from the clock): a fixed one instead.
    monkeypatch.setattr(conversations.ConversationStore, "default_export_path",
                        lambda self, _cid: paths().exports / "what-is-the-capital-of-france.md")

    async def run_before(pilot):
        await library_loaded(pilot)
        await pilot.app.push_screen(ConversationsScreen())
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_quantize_form_marks_every_bad_field(snap_compare, home, size):
    """Two bad fields and a start refused: both marked (visible with 256 colours too), both problems listed."""
    from textual.widgets import Input

    from optiq_tui.ui.screens.quantize import QuantizeScreen

    async def run_before(pilot):
        await library_loaded(pilot, highlight=SOURCE)
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, QuantizeScreen))
        screen = pilot.app.screen
        screen.query_one("#target", Input).value = "five"
        screen.query_one("#bits", Input).value = "4,x"
        await wait_until(pilot, lambda: screen.bad_fields == {"target", "bits"}, 10, "both fields marked")
        await pilot.press("ctrl+s")  # refused: the problems are shown, scrolled into view at 80x24
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


# ---- quantize, running and finished -------------------------------------------------


@pytest.fixture
def steady_quantize(monkeypatch) -> None:
    """Durations and the ETA shown as fixed text: they are the only figures that vary."""
    from optiq_tui.ui.screens import quantize_progress
    from optiq_tui.ui.widgets import stage_list, stage_progress

    from textual.widgets._progress_bar import ETAStatus

    monkeypatch.setattr(stage_list, "human_seconds", lambda s: "" if s is None else "1.0 s")
    monkeypatch.setattr(stage_progress, "human_seconds", lambda s: "" if s is None else "1.0 s")
    monkeypatch.setattr(quantize_progress, "human_seconds", lambda s: "1.0 s")
    monkeypatch.setattr(ETAStatus, "render", lambda self: "--:--:--")


def hold_quantize_at_allocation(monkeypatch):
    """The next quantize job waits, once every layer is measured, until the returned gate opens."""
    import functools
    import threading

    from optiq_tui.engine import service
    from optiq_tui.quant.events import StageChanged

    gate, reached = threading.Event(), threading.Event()
    task, thread = service.KINDS["quantize"]

    @functools.wraps(task)  # the engine checks arguments against the task's signature
    def held(ctx, emit, cancel, **args):
        def gated_emit(event):
            if isinstance(event, StageChanged) and event.stage == "allocate" and not reached.is_set():
                reached.set()
                gate.wait(120)
            emit(event)

        return task(ctx, gated_emit, cancel, **args)

    monkeypatch.setitem(service.KINDS, "quantize", (held, thread))
    return gate, reached


async def start_quantize(pilot):
    from optiq_tui.ui.screens.quantize_progress import QuantizeProgressScreen

    await library_loaded(pilot, highlight=SOURCE)
    await pilot.press("q")
    await pilot.pause()
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, QuantizeProgressScreen))
    return pilot.app.screen


@pytest.mark.parametrize("size", SIZES)
def test_quantize_in_progress(snap_compare, home, steady_quantize, monkeypatch, size):
    gate, reached = hold_quantize_at_allocation(monkeypatch)

    async def run_before(pilot):
        from optiq_tui.ui.widgets.sensitivity_chart import SensitivityChart

        screen = await start_quantize(pilot)
        await wait_until(pilot, reached.is_set, 120, "every layer measured")
        await wait_until(pilot, lambda: screen.query_one(SensitivityChart).bars, 30, "the chart")
        await pilot.pause()

    try:
        assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)
    finally:
        gate.set()


@pytest.mark.parametrize("size", SIZES)
def test_quantize_finished(snap_compare, home, steady_quantize, size):
    async def run_before(pilot):
        screen = await start_quantize(pilot)
        from optiq_tui.ui.widgets.sensitivity_chart import SensitivityChart
        from optiq_tui.ui.widgets.stage_list import StageList

        chart = screen.query_one(SensitivityChart)
        await wait_until(pilot, lambda: screen.state != "running", 300, "the quantize")
        await wait_until(pilot, lambda: all(bar.bits for bar in chart.bars.values()), 30, "every layer's width")
        stages = screen.query_one(StageList)
        await wait_until(pilot, lambda: all(e.state in ("done", "skipped") for e in stages.states.values()), 30,
                         "every stage done or skipped")
        # The "finished" toast leaves after a timeout: once it is up, take it down for the shot.
        await wait_until(pilot, lambda: len(pilot.app._notifications) > 0, 30, "the finished toast")
        pilot.app.clear_notifications()
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


# ---- quantize form: the memory planner and conversations to calibrate on (h5) ----------------


def save_two_conversations(monkeypatch) -> None:
    """Two saved chats at fixed times (the picker shows their dates)."""
    from optiq_tui.engine import conversations

    store = conversations.ConversationStore()
    for hour, title in ((20, "What is the capital of France?"), (21, "Write a haiku about quantization")):
        monkeypatch.setattr(conversations, "_now", lambda hour=hour: f"2026-11-30T{hour}:00:00+00:00")
        cid = store.create(model=SOURCE, title=title)
        store.append(cid, "user", title)
        store.append(cid, "assistant", "Paris. " * 30, model=SOURCE)


async def planned_form(pilot):
    """The form on the source with "fit in 29.05 MB at 2,048 tokens, 8-bit KV" planned and both chats ticked."""
    from textual.widgets import Input, Select

    from optiq_tui.ui.screens.quantize import QuantizeScreen
    from optiq_tui.ui.widgets.conversation_picker import ConversationPicker

    await library_loaded(pilot, highlight=SOURCE)
    await pilot.press("q")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, QuantizeScreen))
    form = pilot.app.screen
    form.query_one(ConversationPicker).select_all()
    form.query_one("#kv-bits", Select).value = 8
    form.query_one("#context", Input).value = "2048"
    form.query_one("#memory", Input).value = "29.05MB"
    await wait_until(pilot, lambda: form.query_one("#fit-in").plan is not None, 30, "the plan")
    form.query_one("#target", Input).focus()
    await pilot.pause()
    return form


@pytest.mark.parametrize("size", SIZES)
def test_quantize_form_planned(snap_compare, home, monkeypatch, size):
    save_two_conversations(monkeypatch)

    async def run_before(pilot):
        await planned_form(pilot)

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_quantize_review_with_plan_and_conversations(snap_compare, home, monkeypatch, size):
    save_two_conversations(monkeypatch)

    async def run_before(pilot):
        from optiq_tui.ui.screens.modals import ConfirmModal

        await planned_form(pilot)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(pilot.app.screen, ConfirmModal), 30, "the review")
        await pilot.pause()

    assert snap_compare(OptiqApp(), terminal_size=size, run_before=run_before)
