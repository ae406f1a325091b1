"""The eval screen through Pilot: tiny llama against its 4-bit quant, table, chart, export."""

from __future__ import annotations

import pytest

from optiq_tui.library.catalog import inspect_model
from optiq_tui.ui.app import OptiqApp
from optiq_tui.ui.screens.eval import EvalScreen
from optiq_tui.ui.screens.modals import InputModal
from optiq_tui.ui.widgets.eval_table import COLUMNS, EvalTable
from optiq_tui.ui.widgets.quality_chart import Point, QualityChart, plot
from tests.engine_proc import assert_on
from tests.ui_util import hold_job, wait_until

# In-process only: the cancel test holds the eval with hold_job (an in-process engine's task table).


@pytest.fixture(scope="module")
def llama_and_quant(tiny_llama_dir, tmp_path_factory):
    from mlx_lm import convert

    out = tmp_path_factory.mktemp("evalq") / "tiny-llama-q4"
    convert(str(tiny_llama_dir), str(out), quantize=True, q_bits=4, q_group_size=64)
    return inspect_model(tiny_llama_dir), inspect_model(out)


async def test_eval_screen_shows_table_and_chart_and_exports(llama_and_quant, tmp_path, engine_kind):
    source, quant = llama_and_quant
    app = OptiqApp()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = EvalScreen([quant, source], retrieval=False)
        await app.push_screen(screen)
        # The unquantized model is taken as the reference.
        assert screen.reference is source and screen.models == [quant]
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.report is not None, 120, "the eval report")
        table = screen.query_one(EvalTable)
        assert [str(c.label) for c in table.columns.values()] == list(COLUMNS)
        assert table.row_count == 2
        rows = {r.name: r for r in screen.report.rows}
        assert rows[source.name].is_reference and rows[quant.name].mean_kl > 0
        cells = [str(c) for c in table.get_row_at(1)]
        assert cells[0] == quant.name and cells[3] == f"{rows[quant.name].mean_kl:.4f}"
        chart = screen.query_one(QualityChart)
        assert [p.label for p in chart.points] == [f"{source.name} (ref)", quant.name]
        assert "saved to" in str(screen.query_one("#eval-status").render())

        await pilot.press("m")
        await wait_until(pilot, lambda: isinstance(app.screen, InputModal), 10, "the export dialog")
        target = tmp_path / "eval.md"
        app.screen.query_one("#answer").value = str(target)
        await pilot.press("enter")
        await wait_until(pilot, target.exists, 20, "the Markdown export")
        assert quant.name in target.read_text()
        assert_on(app, engine_kind)


async def test_eval_screen_cancel_keeps_nothing(llama_and_quant, monkeypatch):
    source, quant = llama_and_quant
    gate = hold_job(monkeypatch, "eval")  # held at its first progress event
    app = OptiqApp()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = EvalScreen([source, quant], retrieval=False)
        await app.push_screen(screen)
        await pilot.press("enter")
        assert screen.running
        await wait_until(pilot, gate.reached.is_set, 60, "the eval's first progress")
        await pilot.press("escape")
        await wait_until(pilot, gate.cancel_requested, 30, "the cancel request")
        gate.open()
        await wait_until(pilot, lambda: not screen.running, 120, "the cancel")
        assert screen.report is None
        assert isinstance(app.screen, EvalScreen)  # Esc cancelled, it did not leave
        assert "cancelled" in str(screen.query_one("#eval-status").render())



async def test_a_job_started_while_the_tui_connects_is_not_opened_twice(llama_and_quant, monkeypatch):
    # The TUI re-opens what the engine ran before it came; an eval this TUI submits while it is
    # still connecting is its own. The connect is held after the client is ready until the eval runs.
    import asyncio

    source, quant = llama_and_quant
    gate = hold_job(monkeypatch, "eval")
    connected = asyncio.Event()
    engine_text = OptiqApp.engine_text

    async def held_engine_text(app):
        await connected.wait()
        return await engine_text(app)

    monkeypatch.setattr(OptiqApp, "engine_text", held_engine_text)
    app = OptiqApp()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = EvalScreen([source, quant], retrieval=False)
        await app.push_screen(screen)
        await pilot.press("enter")
        await wait_until(pilot, gate.reached.is_set, 60, "the eval to run")
        connected.set()
        await wait_until(pilot, lambda: "in-process" in app.library.engine_text, 30, "the connect to end")
        await pilot.pause()
        assert app.screen is screen and sum(isinstance(s, EvalScreen) for s in app.screen_stack) == 1
        gate.open()
        await wait_until(pilot, lambda: screen.report is not None, 120, "the eval report")

def test_quality_chart_places_points():
    lines = plot([Point("q4", 4.5, 0.2), Point("q8", 8.5, 0.01)], 40, 10)
    body = lines[:-3]
    assert any("1" in line for line in body[:1])  # the worst KL sits on the top row
    assert any("2" in line for line in body[-1:])  # the best near the axis
    assert lines[-1].endswith("1=q4  2=q8")
    assert plot([], 40, 10) == ["(no results yet)"]


async def test_eval_screen_finds_the_reference_from_provenance(llama_and_quant, tmp_path):
    """A quant that names its source: Enter pressed before the lookup ends waits for it, then runs."""
    import json
    import shutil

    source, quant = llama_and_quant
    named = tmp_path / "tiny-llama-q4-named"
    shutil.copytree(quant.path, named)
    (named / "optiq_quant.json").write_text(json.dumps({"method": "uniform", "source_model": str(source.path)}))
    app = OptiqApp()
    async with app.run_test(size=(120, 40)) as pilot:
        screen = EvalScreen([inspect_model(named)], retrieval=False)
        await app.push_screen(screen)
        await pilot.press("enter")
        await wait_until(pilot, lambda: screen.report is not None, 120, "the eval report")
        assert screen.report.reference == source.name
        assert [r.name for r in screen.report.rows] == [source.name, named.name]
