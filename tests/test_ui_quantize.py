"""The quantize form and progress view through Pilot, running the real quantizer on a tiny llama."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Button, Input, Select

from optiq_tui.quant.config import QuantConfig
from optiq_tui.quant.events import LayerScore
from optiq_tui.quant.predict import predict_size
from optiq_tui.ui.app import OptiqApp
from optiq_tui.ui.format import human_bytes
from optiq_tui.ui.screens.modals import ConfirmModal
from optiq_tui.ui.screens.quantize import UNIFORM_4, QuantizeScreen
from optiq_tui.ui.screens.quantize_progress import QuantizeProgressScreen
from optiq_tui.ui.widgets.model_table import ModelTable
from optiq_tui.ui.widgets.sensitivity_chart import SensitivityChart
from optiq_tui.ui.widgets.stage_list import StageList
from tests.engine_proc import assert_on
from tests.ui_util import hold_job, install_model, library_ready, wait_until

# In-process only: the cancel test holds the job with hold_job (an in-process engine's task table);
# the quit test checks that quitting stops an in-process engine's job (an engine process keeps it,
# see tests/test_ui_engine_proc.py).


@pytest.fixture
def llama_home(optiq_home, tiny_llama_dir):
    install_model(tiny_llama_dir, optiq_home, "tiny-llama")
    return optiq_home


def form_text(screen, selector: str) -> str:
    widget = screen.query_one(selector)
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


async def open_form(app, pilot) -> QuantizeScreen:
    await wait_until(pilot, lambda: library_ready(app) and app.library.query_one(ModelTable).row_count)
    await pilot.press("q")
    await wait_until(pilot, lambda: isinstance(app.screen, QuantizeScreen))
    return app.screen


async def start_quantize(app, pilot) -> QuantizeProgressScreen:
    """Open the form on the highlighted model, start it with the defaults, return the progress view."""
    await open_form(app, pilot)
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: isinstance(app.screen, QuantizeProgressScreen))
    return app.screen


async def test_form_predicts_size_and_validates(llama_home):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        form = await open_form(app, pilot)
        info = form.info
        expected = predict_size(info, QuantConfig(target_bpw=5.0, bits=(4, 8), group_size=64))
        await wait_until(pilot, lambda: human_bytes(expected.disk_bytes) in form_text(form, "#prediction"))
        assert form.query_one("#name", Input).value == "tiny-llama-optiq-5bpw"

        form.query_one("#target", Input).value = "five"
        await wait_until(pilot, lambda: "must be a number" in form_text(form, "#quant-errors"))
        assert form.query_one("#start", Button).disabled
        form.query_one("#target", Input).value = "4.2"  # 4-bit at group 64 costs 4.5
        await wait_until(pilot, lambda: "below the smallest" in form_text(form, "#quant-errors"))
        form.query_one("#target", Input).value = "9"
        await wait_until(pilot, lambda: "above the largest" in form_text(form, "#quant-errors"))
        form.query_one("#target", Input).value = "6"
        await wait_until(pilot, lambda: not form.query_one("#start", Button).disabled)
        assert form.query_one("#name", Input).value == "tiny-llama-optiq-6bpw"  # follows the settings
        form.query_one("#bits", Input).value = "4,7"
        await wait_until(pilot, lambda: "bit width 7 is not supported" in form_text(form, "#quant-errors"))
        form.query_one("#bits", Input).value = "4,8"
        form.query_one("#calibration", Input).value = "/no/such/file.txt"
        await wait_until(pilot, lambda: "does not exist" in form_text(form, "#quant-errors"))
        form.query_one("#calibration", Input).value = ""

        # The uniform baseline: no budget to pick, size counted exactly.
        form.query_one("#preset", Select).value = UNIFORM_4
        await wait_until(pilot, lambda: form.query_one("#target", Input).disabled)
        uniform = predict_size(info, QuantConfig(uniform_bits=4, group_size=64))
        await wait_until(pilot, lambda: human_bytes(uniform.disk_bytes) in form_text(form, "#prediction"))
        assert form.query_one("#name", Input).value == "tiny-llama-4bit"

        # A name already in the library is refused; the automatic one steps around it.
        form.query_one("#name", Input).value = "tiny-llama"
        await wait_until(pilot, lambda: "already in the library" in form_text(form, "#quant-errors"))
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.library)


async def test_form_marks_every_bad_field_hides_unused_ones_and_reviews_on_enter(llama_home):
    from optiq_tui.ui.screens.modals import ConfirmModal

    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(app, pilot)
        form.query_one("#target", Input).value = "five"
        form.query_one("#calibration", Input).value = "/no/such/file.txt"
        form.query_one("#name", Input).value = "tiny-llama"
        await wait_until(pilot, lambda: "already in the library" in form_text(form, "#quant-errors"))
        errors = form_text(form, "#quant-errors")
        assert "must be a number" in errors and "does not exist" in errors  # one error hides no other
        assert {f for f in ("target", "bits", "calibration", "name")
                if form.query_one(f"#{f}", Input).has_class("-invalid")} == {"target", "calibration", "name"}
        form.query_one("#target", Input).value = "5"
        form.query_one("#calibration", Input).value = ""
        form.query_one("#name", Input).value = "my-quant"
        await wait_until(pilot, lambda: not form.query_one("#start", Button).disabled)
        assert not any(form.query_one(f"#{f}", Input).has_class("-invalid") for f in ("target", "calibration", "name"))

        form.query_one("#target", Input).focus()
        await pilot.press("enter")  # a review, not a start
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        assert "tiny-llama → my-quant" in app.screen.question and "5 bits/weight" in app.screen.question
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is form)

        form.query_one("#preset", Select).value = UNIFORM_4
        await wait_until(pilot, lambda: not form.query_one("#target", Input).display)
        assert not form.query_one("#bits", Input).display


async def test_quantize_runs_to_completion_and_lands_in_the_library(llama_home, engine_kind):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        progress = await start_quantize(app, pilot)
        await wait_until(pilot, lambda: progress.state != "running", timeout=240, what="the quantize to finish")
        assert progress.state == "done", progress.query_one("#stage-label").render()

        stages = progress.query_one(StageList).states
        # Every stage done; refinement is off unless asked.
        assert {s: stages[s].state for s in stages} == {s: "skipped" if s == "refine" else "done" for s in stages}
        chart = progress.query_one(SensitivityChart)
        assert chart.bars and all(bar.bits in (4, 8) for bar in chart.bars.values())
        assert any(isinstance(e, LayerScore) and e.chosen_bits for e in progress.events)
        result = progress.result
        assert result["achieved_bpw"] <= 5.0 + 1e-6
        await wait_until(pilot, lambda: "achieved" in form_text(progress, "#summary"))
        assert "uniform 4-bit" in form_text(progress, "#summary")

        await pilot.press("enter")
        table = app.library.query_one(ModelTable)
        await wait_until(pilot, lambda: app.screen is app.library and table.row_count == 2)
        await wait_until(pilot, lambda: table.highlighted_model.name == "tiny-llama-optiq-5bpw")
        assert table.highlighted_model.quant_kind == "optiq"
        meta = json.loads((llama_home / "models" / "tiny-llama-optiq-5bpw" / "optiq_quant.json").read_text())
        assert meta["source_model"] == "tiny-llama"
        assert_on(app, engine_kind)


async def test_cancel_mid_run_keeps_nothing(llama_home, monkeypatch):
    # Held once measuring has produced its first layer score, until the cancel is confirmed.
    gate = hold_job(monkeypatch, "quantize", lambda event: isinstance(event, LayerScore))
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        progress = await start_quantize(app, pilot)
        stage_list = progress.query_one(StageList)
        await wait_until(pilot, lambda: progress.query_one(SensitivityChart).bars, timeout=120)
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_until(pilot, gate.cancel_requested, what="the cancel request")
        gate.open()
        await wait_until(pilot, lambda: app.screen is app.library, timeout=120, what="the cancel")
        assert progress.state == "cancelled"
        assert "cancelled" in {s.state for s in stage_list.states.values()}
        assert sorted(p.name for p in (llama_home / "models").iterdir()) == ["tiny-llama"]
        assert list((llama_home / ".staging").iterdir()) == []


async def test_form_asks_before_requantizing_a_quantized_source(llama_home):
    from textual.widgets import Checkbox

    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.quant.pipeline import quantize

    quantize(inspect_model(llama_home / "models" / "tiny-llama"), QuantConfig(uniform_bits=4, verify=False))
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app) and app.library.query_one(ModelTable).row_count == 2)
        app.library.refresh_catalog(highlight="tiny-llama-4bit-g64")
        table = app.library.query_one(ModelTable)
        await wait_until(pilot, lambda: table.highlighted_model.name == "tiny-llama-4bit-g64")
        await pilot.press("q")
        await wait_until(pilot, lambda: isinstance(app.screen, QuantizeScreen))
        form = app.screen
        await wait_until(pilot, lambda: "already quantized" in form_text(form, "#quant-errors"))
        assert form.query_one("#start", Button).disabled
        form.query_one("#dequantize", Checkbox).value = True
        await wait_until(pilot, lambda: not form.query_one("#start", Button).disabled)
        config, errors = form.build_config()
        assert errors == [] and config.dequantize


async def test_quitting_mid_run_stops_the_quantize_and_keeps_nothing(llama_home):
    import asyncio
    import time

    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        progress = await start_quantize(app, pilot)
        await wait_until(pilot, lambda: progress.query_one(SensitivityChart).bars, timeout=120)
        await pilot.press("ctrl+q")
        deadline = time.monotonic() + 60
        while app.is_running and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    assert not app.engine.client.service.busy  # the in-process engine stopped it
    assert sorted(p.name for p in (llama_home / "models").iterdir()) == ["tiny-llama"]
    assert list((llama_home / ".staging").iterdir()) == []


# ---- the memory planner and conversations in the form ---------------------------------


async def test_planner_sets_the_target_and_kv_bits_reach_the_config(llama_home):
    from textual.widgets import Static

    from optiq_tui.quant.plan import model_memory, parse_memory, plan, predict_peak

    mm = model_memory(llama_home / "models" / "tiny-llama")
    # A memory size that a 6-bit quant at 1,024 tokens just fits, as the planner counts it.
    memory = f"{predict_peak(mm, 6.0, 1024).total / 1e6:.3f}MB"
    expected = plan(mm, parse_memory(memory), 1024)
    expected_kv8 = plan(mm, parse_memory(memory), 1024, kv_bits=8)
    assert 4.5 < expected.target_bpw < 8.5 and expected.target_bpw < expected_kv8.target_bpw
    # optiq-4/8 spends at most all-8-bit (8.5 bpw at group 64): a wider plan is capped there.
    kv8_target = min(expected_kv8.target_bpw, 8.5)

    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(app, pilot)
        target = form.query_one("#target", Input)
        form.query_one("#memory", Input).value = memory
        await wait_until(pilot, lambda: "context in tokens too" in form_text(form, "#plan-result"))
        assert target.value == "5"  # nothing planned yet: the preset's target stands
        form.query_one("#context", Input).value = "1,024"
        await wait_until(pilot, lambda: target.value == f"{expected.target_bpw:.2f}", what="the planned target")
        assert f"{expected.target_bpw:.2f} bpw fits" in form_text(form, "#plan-result")
        assert "weights" in form_text(form, "#plan-result")

        form.query_one("#kv-bits", Select).value = 8  # a smaller cache leaves room for wider weights
        await wait_until(pilot, lambda: target.value == f"{kv8_target:.2f}", what="the KV-8 plan")
        config, errors = form.build_config()
        assert errors == [] and config.kv_bits == 8 and config.target_bpw == kv8_target

        target.value = "5.5"  # the plan suggests; the user decides
        await wait_until(pilot, lambda: not form.query_one("#start", Button).disabled)
        assert form.build_config()[0].target_bpw == 5.5

        form.query_one("#memory", Input).value = "1MB"
        await wait_until(pilot, lambda: "does not fit" in form_text(form, "#plan-result"), what="the refusal")
        assert target.value == "5.5"  # no plan: the target stays
        assert form.query_one("#plan-result", Static).has_class("-error")
        assert not form.query_one("#start", Button).disabled  # the planner advises; it blocks nothing
        form.query_one("#memory", Input).value = "[lots]"
        await wait_until(pilot, lambda: form.query_one("#memory", Input).has_class("-invalid"))
        assert "cannot read a memory size from '[lots]'" in form_text(form, "#plan-result")  # as typed
        assert form.query_one("#plan-result", Static).has_class("-error")

        # The review before start names the plan and the KV bits.
        form.query_one("#memory", Input).value = memory
        await wait_until(pilot, lambda: target.value == f"{kv8_target:.2f}")
        form.query_one("#name", Input).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        question = app.screen.question
        planned = "fits unquantized" if expected_kv8.unquantized_fits else f"planned {expected_kv8.target_bpw:.2f} bpw"
        assert f"{kv8_target:g} bits/weight" in question and planned in question and "at 1024 tokens, KV 8-bit" in question
        assert "KV cache: 8-bit" in question
        await pilot.press("n")
        await wait_until(pilot, lambda: app.screen is form)

        # The group size is part of the plan: a new one plans again (and all-8-bit costs 8.25 at 128).
        at_128 = min(plan(mm, parse_memory(memory), 1024, kv_bits=8, group_size=128).target_bpw, 8.25)
        form.query_one("#group", Select).value = 128
        await wait_until(pilot, lambda: target.value == f"{at_128:.2f}", what="the group-128 plan")


def _save_conversation(store, title: str, turns: list[tuple[str, str]]) -> str:
    cid = store.create(model="tiny-llama", title=title)
    for user, assistant in turns:
        store.append(cid, "user", user)
        store.append(cid, "assistant", assistant, model="tiny-llama")
    return cid


async def test_picked_conversations_reach_the_quantize_and_stay_unchanged(llama_home, monkeypatch):
    from optiq_tui.engine import conversations
    from optiq_tui.ui.widgets.conversation_picker import ConversationPicker

    store = conversations.ConversationStore()
    ids = []
    for hour, title in ((22, "Capital of France"), (21, "A haiku on rounding"), (20, "Left out")):
        # Saved an hour apart, so the list (most recent first) puts "Left out" last.
        monkeypatch.setattr(conversations, "_now", lambda hour=hour: f"2026-11-30T{hour}:00:00+00:00")
        ids.append(_save_conversation(store, title, [(f"{title}? Tell me in detail, please.",
                                                      "Here is a long answer " * 40)]))
    files = sorted(store.folder.glob("*.jsonl"))
    before = {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files}

    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(app, pilot)
        picker = form.query_one(ConversationPicker)
        # Most recent first; tick the first two with the keyboard.
        assert list(picker.summaries) == [s.id for s in store.list()]
        picker.focus()
        await pilot.press("space", "down", "space")
        await wait_until(pilot, lambda: len(picker.selected) == 2)
        picked = tuple(list(picker.summaries)[:2])
        config, errors = form.build_config()
        assert errors == [] and config.conversations == picked

        form.query_one("#name", Input).focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        question = app.screen.question
        titles = [picker.summaries[i].title for i in picked]
        assert "+ 2 saved conversations" in question and all(f"“{t}”" in question for t in titles)
        assert "Left out" not in question
        await pilot.press("y")
        await wait_until(pilot, lambda: isinstance(app.screen, QuantizeProgressScreen))
        progress = app.screen
        assert progress.config.conversations == picked
        await wait_until(pilot, lambda: progress.state != "running", timeout=240, what="the quantize to finish")
        assert progress.state == "done", progress.query_one("#stage-label").render()

    (job,) = [j for j in app.engine.client.service.jobs() if j.kind == "quantize"]
    assert tuple(job.args["config"]["conversations"]) == picked
    meta = json.loads((llama_home / "models" / "tiny-llama-optiq-5bpw" / "optiq_quant.json").read_text())
    assert meta["calibration"]["source"] == "shipped + 2 saved conversations"
    assert "2 saved conversations" in (llama_home / "models" / "tiny-llama-optiq-5bpw" / "README.md").read_text()
    # Read, never written: same files, same bytes, same modification times.
    assert sorted(store.folder.glob("*.jsonl")) == files
    assert {f: (f.read_bytes(), f.stat().st_mtime_ns) for f in files} == before
    assert ids[2] not in picked


async def test_an_empty_conversation_is_refused_on_its_field(llama_home):
    from optiq_tui.engine.conversations import ConversationStore
    from optiq_tui.ui.widgets.conversation_picker import ConversationPicker

    ConversationStore().create(model="tiny-llama", title="never answered")
    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(app, pilot)
        picker = form.query_one(ConversationPicker)
        picker.select_all()
        await wait_until(pilot, lambda: "no saved conversation with messages" in form_text(form, "#quant-errors"))
        assert picker.has_class("-invalid") and form.query_one("#start", Button).disabled
        picker.deselect_all()
        await wait_until(pilot, lambda: not form.query_one("#start", Button).disabled)
        assert not picker.has_class("-invalid")


async def test_refine_minutes_reach_the_config_and_the_review(llama_home):
    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        form = await open_form(app, pilot)
        refine = form.query_one("#refine", Input)
        assert form.build_config()[0].refine_minutes is None  # off unless asked
        refine.value = "soon"
        await wait_until(pilot, lambda: "Refine minutes must be a number" in form_text(form, "#quant-errors"))
        assert refine.has_class("-invalid") and form.query_one("#start", Button).disabled
        refine.value = "0"
        await wait_until(pilot, lambda: "--refine 0 minutes" in form_text(form, "#quant-errors"))
        assert refine.has_class("-invalid")
        refine.value = "2.5"
        await wait_until(pilot, lambda: not form.query_one("#start", Button).disabled)
        assert not refine.has_class("-invalid") and form.build_config()[0].refine_minutes == 2.5
        refine.focus()
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        assert "then refine up to 2.5 min" in app.screen.question


def test_summary_shows_the_refinement_gain():
    from optiq_tui.ui.screens.quantize_progress import summary_text

    result = {"name": "q", "method": "uniform", "preset": None, "bit_histogram": {"4": 7},
              "target_bpw": None, "achieved_bpw": 4.5, "timings": {"refine": 60.0}, "cache_hit": False,
              "quality": None, "refine": {"kl_before": 0.47, "kl_after": 0.33, "gain": 0.7021, "steps": 12,
                                          "best_step": 12, "seconds": 60.0, "stopped": "time", "layers": 211}}
    text = summary_text(result).plain
    assert "refinement: held-back calibration KL 0.4700 → 0.3300 (0.70x) after 12 steps" in text
    assert "refinement" not in summary_text({**result, "refine": None}).plain
