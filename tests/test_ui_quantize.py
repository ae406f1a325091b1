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
from tests.engine_proc import assert_on, engine_kind  # noqa: F401 - a fixture
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
        assert {s: stages[s].state for s in stages} == {s: "done" for s in stages}
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
