"""The quantize view's job bar: it moves with every stage and step, and its time left tracks a stall."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Label, ProgressBar

from optiq_tui.progress import Progress
from optiq_tui.ui.widgets import stage_progress
from optiq_tui.ui.widgets.stage_progress import StageProgress, time_left


class Clock:
    """Stands in for the widget's clock so the test sets the elapsed time instead of waiting for it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_time_left_needs_a_measured_rate() -> None:
    assert time_left(10.0, None) is None  # no total: unknown
    assert time_left(10.0, 0.01) is None  # too little done to extrapolate
    assert time_left(1.0, 0.5) is None  # too early in the stage
    assert time_left(10.0, 0.25) == 30.0
    assert time_left(10.0, 1.0) is None


async def test_bar_moves_per_stage_and_step_and_time_left_grows_in_a_stall(monkeypatch) -> None:
    clock = Clock()
    monkeypatch.setattr(stage_progress, "monotonic", clock)

    class Host(App):
        def compose(self) -> ComposeResult:
            yield StageProgress(("load", "measure", "verify"))

    app = Host()
    async with app.run_test(size=(80, 10)) as pilot:
        widget = app.query_one(StageProgress)
        bar = app.query_one(ProgressBar)
        eta = app.query_one("#stage-eta", Label)
        seen = [bar.progress]
        widget.stage_changed("load", "running")
        widget.stage_changed("load", "done")
        seen.append(bar.progress)
        widget.stage_changed("measure", "running")
        for step in range(1, 5):
            clock.now += 5
            widget.progress(Progress("measure", step, 8, f"block {step}", unit="steps"))
            seen.append(bar.progress)
        await pilot.pause()
        assert seen == sorted(seen) and len(set(seen)) == len(seen), seen  # every event moved it
        assert bar.total == 3 and bar.progress == 1.5
        assert "stage 2 of 3" in str(eta.render()) and "measure: about 20.0s left" in str(eta.render())
        # Nothing arrives for 20 s: the estimate grows instead of counting down to zero.
        clock.now += 20
        widget._show_time()
        assert "measure: about 40.0s left" in str(eta.render())
        widget.stage_changed("measure", "done")
        widget.stage_changed("verify", "skipped")
        widget.end("Finished.", complete=True)
        assert bar.progress == 3 and str(eta.render()).startswith("took ")


async def test_a_view_attached_to_a_running_job_counts_from_the_jobs_start(monkeypatch) -> None:
    # After an SSH drop the next TUI follows a job 90 s old: its time is the job's, not the view's.
    clock = Clock()
    monkeypatch.setattr(stage_progress, "monotonic", clock)
    monkeypatch.setattr(stage_progress, "time", lambda: 1_000_090.0)

    class Host(App):
        def compose(self) -> ComposeResult:
            yield StageProgress(("load", "measure"), started=1_000_000.0)

    app = Host()
    async with app.run_test(size=(80, 10)) as pilot:
        widget = app.query_one(StageProgress)
        widget.stage_changed("load", "running")
        await pilot.pause()
        assert "1m30s so far" in str(app.query_one("#stage-eta", Label).render())
        clock.now += 10
        widget.end("Finished.", complete=True)
        assert str(app.query_one("#stage-eta", Label).render()) == "took 1m40s"
