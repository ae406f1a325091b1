"""The app shell: import layering, first paint without MLX, the engine bridge, about, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from textual.command import CommandList
from textual.screen import Screen

from optiq_tui.progress import Cancelled, Log, OptiqError, Progress
from optiq_tui.ui.app import OptiqApp
from optiq_tui.ui.bridge import error_details
from optiq_tui.ui.screens.about import AboutScreen
from optiq_tui.ui.screens.modals import ErrorModal
from tests.ui_util import install_model, library_ready, wait_until

FIRST_PAINT = """
import asyncio, json, sys
from optiq_tui.ui.app import OptiqApp
import optiq_tui.library.catalog

async def main():
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        while app.library.catalog is None:
            await pilot.pause(0.02)
        rows = app.library.query_one("#models").row_count
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("mlx", "mlx_lm", "transformers"))
    print(json.dumps({"rows": rows, "heavy": heavy}))

asyncio.run(main())
"""

CORE_IMPORTS = """
import importlib, json, pkgutil, sys
imported = []
for layer in ("library", "quant", "engine", "eval"):
    package = importlib.import_module(f"optiq_tui.{layer}")
    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        importlib.import_module(module.name)
        imported.append(module.name)
ui = sorted(m for m in sys.modules if m.split(".")[0] in ("textual", "rich"))
print(json.dumps({"imported": imported, "ui": ui}))
"""


def _run_python(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_first_paint_imports_no_mlx(optiq_home, tiny_llama_dir):
    install_model(tiny_llama_dir, optiq_home, "tiny-llama")
    result = _run_python(FIRST_PAINT)
    assert result["rows"] == 1  # the library really was scanned and drawn
    assert result["heavy"] == []


def test_core_layers_never_import_textual_or_rich():
    result = _run_python(CORE_IMPORTS)
    assert "optiq_tui.library.catalog" in result["imported"]
    assert "optiq_tui.quant.pipeline" in result["imported"]
    assert result["ui"] == []


class Recorder(Screen):
    """Collects the Job* messages the bridge posts to it, and on which thread they ran."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple] = []
        self.threads: set[int] = set()

    def _note(self, *item) -> None:
        self.threads.add(threading.get_ident())
        self.seen.append(item)

    def on_job_progressed(self, m) -> None:
        self._note("progress", m.job_id, m.event)

    def on_job_finished(self, m) -> None:
        self._note("finished", m.job_id, m.result)

    def on_job_failed(self, m) -> None:
        self._note("failed", m.job_id, m.error, m.details)

    def on_job_cancelled(self, m) -> None:
        self._note("cancelled", m.job_id)


async def test_bridge_posts_events_and_results_on_the_ui_thread():
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        recorder = Recorder()
        await app.push_screen(recorder)
        ran_on: list[str] = []

        def job(emit, cancel):
            ran_on.append(threading.current_thread().name)
            emit(Log("hello"))
            emit(Progress("work", 1, 2))
            emit(Progress("work", 2, 2))
            return 42

        handle = app.bridge.submit(recorder, job, name="test")
        await wait_until(pilot, lambda: any(s[0] == "finished" for s in recorder.seen))
        assert ran_on == ["optiq-engine"]
        assert recorder.threads == {threading.get_ident()}  # handlers ran on the UI thread
        assert [s[0] for s in recorder.seen] == ["progress", "progress", "progress", "finished"]
        assert recorder.seen[0][2] == Log("hello")
        assert recorder.seen[-1] == ("finished", handle.id, 42)


async def test_bridge_thins_a_flood_of_progress_but_keeps_the_last():
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        recorder = Recorder()
        await app.push_screen(recorder)

        def job(emit, cancel):
            for i in range(1, 20001):
                emit(Progress("download", i, 20000, unit="B"))

        app.bridge.submit(recorder, job, name="flood", mlx=False)
        await wait_until(pilot, lambda: any(s[0] == "finished" for s in recorder.seen))
        events = [s[2] for s in recorder.seen if s[0] == "progress"]
        assert len(events) < 2000
        assert events[-1].done == 20000


async def test_bridge_reports_cancel_and_failure():
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        recorder = Recorder()
        await app.push_screen(recorder)

        def waits(emit, cancel):
            while not cancel.wait(0.01):
                pass
            raise Cancelled()

        handle = app.bridge.submit(recorder, waits, name="waits")
        handle.cancel()
        await wait_until(pilot, lambda: ("cancelled", handle.id) in recorder.seen)

        def fails(emit, cancel):
            try:
                open("/nonexistent/x")
            except OSError as exc:
                raise OptiqError("could not read the file; check the path") from exc

        failing = app.bridge.submit(recorder, fails, name="fails")
        await wait_until(pilot, lambda: any(s[0] == "failed" for s in recorder.seen))
        kind, job_id, error, details = recorder.seen[-1]
        assert job_id == failing.id and str(error) == "could not read the file; check the path"
        assert "No such file or directory" in details  # the cause, not a traceback
        assert "Traceback" not in details


def test_error_details_of_a_bug_is_its_traceback():
    try:
        {}["missing"]
    except KeyError as exc:
        details = error_details(exc)
    assert details.startswith("Traceback") and "KeyError" in details
    assert error_details(OptiqError("plain")) == ""


async def test_show_error_opens_the_modal_with_message_and_details():
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        app.show_error("Import failed", OptiqError("not a GGUF file"), "the magic bytes were wrong")
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal))
        modal = app.screen
        assert modal.message == "not a GGUF file" and modal.details == "the magic bytes were wrong"
        await pilot.press("escape")
        await wait_until(pilot, lambda: not isinstance(app.screen, ErrorModal))


async def test_about_screen_runs_doctor_on_the_engine_thread():
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        await pilot.press("f1")
        await wait_until(pilot, lambda: isinstance(app.screen, AboutScreen))
        about = app.screen
        await wait_until(pilot, lambda: about.diagnostics is not None, timeout=60)
        assert about.diagnostics["backend"] in ("CPU", "Metal (GPU)")
        assert about.diagnostics["versions"]["textual"]
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.library)


async def test_palette_opens_about(optiq_home):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        await pilot.press("ctrl+p")
        await pilot.press(*"about and diag")
        palette = app.screen
        await wait_until(pilot, lambda: palette.query_one(CommandList).highlighted is not None)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, AboutScreen))
