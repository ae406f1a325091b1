"""The app shell: import layering, first paint without MLX, engine jobs on a screen, about, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

from textual.command import CommandList

from optiq_tui.progress import Cancelled, Log, OptiqError, Progress
from optiq_tui.ui.app import OptiqApp, error_details
from optiq_tui.ui.screens.about import AboutScreen
from optiq_tui.ui.screens.base import JobScreen
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


class Recorder(JobScreen):
    """Records what the JobScreen hooks hear of an engine job, and on which thread."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple] = []
        self.threads: set[int] = set()

    def _note(self, *item) -> None:
        self.threads.add(threading.get_ident())
        self.seen.append(item)

    async def job_event(self, job, event) -> None:
        self._note("event", job.id, event)

    async def job_done(self, job) -> None:
        self._note("done", job.id, job.result)

    async def job_failed(self, job) -> None:
        self._note("failed", job.id, job.error, job.error_type)

    async def job_cancelled(self, job) -> None:
        self._note("cancelled", job.id)


def engine_task(monkeypatch, kind: str, fn, thread: str = "mlx") -> None:
    """Give the in-process engine a job kind running ``fn(emit, cancel)`` (a test's own work)."""
    from optiq_tui.engine import service

    def task(ctx, emit, cancel) -> dict:
        return fn(emit, cancel)

    monkeypatch.setitem(service.KINDS, kind, (task, thread))


async def test_a_job_screen_hears_events_and_result_on_the_ui_thread(monkeypatch):
    ran_on: list[str] = []

    def job(emit, cancel):
        ran_on.append(threading.current_thread().name)
        emit(Log("hello"))
        emit(Progress("work", 1, 2))
        emit(Progress("work", 2, 2))
        return {"answer": 42}

    engine_task(monkeypatch, "probe", job)
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        recorder = Recorder()
        await app.push_screen(recorder)
        assert recorder.start_job("probe")
        assert not recorder.start_job("probe")  # one at a time: the guard says so
        await wait_until(pilot, lambda: any(s[0] == "done" for s in recorder.seen))
        assert ran_on == ["optiq-mlx"]  # the engine picked its MLX thread
        assert recorder.threads == {threading.get_ident()}  # hooks ran on the UI thread
        assert [s[0] for s in recorder.seen] == ["event", "event", "event", "done"]
        assert recorder.seen[0][2] == Log("hello")
        assert recorder.seen[-1][2] == {"answer": 42} and recorder.job is None


async def test_a_job_screen_thins_a_flood_of_progress_but_keeps_the_last(monkeypatch):
    def job(emit, cancel):
        for i in range(1, 20001):
            emit(Progress("download", i, 20000, unit="B"))
        return {}

    engine_task(monkeypatch, "flood", job, "io")
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        recorder = Recorder()
        await app.push_screen(recorder)
        recorder.start_job("flood")
        await wait_until(pilot, lambda: any(s[0] == "done" for s in recorder.seen))
        events = [s[2] for s in recorder.seen if s[0] == "event"]
        assert len(events) < 2000
        assert events[-1].done == 20000


async def test_a_job_screen_hears_cancel_and_failure(monkeypatch):
    def waits(emit, cancel):
        emit(Log("waiting"))
        while not cancel.wait(0.01):
            pass
        raise Cancelled()

    def fails(emit, cancel):
        try:
            open("/nonexistent/x")
        except OSError as exc:
            raise OptiqError("could not read the file; check the path") from exc

    engine_task(monkeypatch, "waits", waits)
    engine_task(monkeypatch, "fails", fails)
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        recorder = Recorder()
        await app.push_screen(recorder)
        recorder.start_job("waits")
        await wait_until(pilot, lambda: recorder.seen)  # running: its first event came
        await recorder.cancel_job()
        await wait_until(pilot, lambda: recorder.seen[-1][0] == "cancelled")
        recorder.start_job("fails")
        await wait_until(pilot, lambda: recorder.seen[-1][0] == "failed")
        _kind, _id, error, error_type = recorder.seen[-1]
        assert error == "could not read the file; check the path" and error_type == "OptiqError"


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
