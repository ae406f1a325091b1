"""The library's job line: a download shows bytes of the total and its speed."""

from __future__ import annotations

from optiq_tui.progress import Progress
from optiq_tui.ui.widgets import job_bar
from optiq_tui.ui.widgets.job_bar import ByteRate, describe


def test_download_label_shows_bytes_of_total_and_speed(monkeypatch) -> None:
    now = [100.0]
    monkeypatch.setattr(job_bar, "monotonic", lambda: now[0])
    rate = ByteRate()
    assert rate.update(Progress("download", 1_000_000, 108_000_000, unit="B")) is None  # no rate yet
    now[0] += 2.0
    speed = rate.update(Progress("download", 7_200_000, 108_000_000, unit="B"))
    assert speed == 3_100_000
    label = describe("Downloading the demo model", Progress("download", 41_200_000, 108_000_000, unit="B"), speed)
    assert label == "Downloading the demo model · 41.2 MB of 108.0 MB, 3.1 MB/s"
    # A new stage starts its own rate.
    assert rate.update(Progress("import", 5, 10, unit="B")) is None
    assert describe("Importing", Progress("import", 1, 3, "tensors")) == "Importing · tensors"


async def test_percentage_only_when_it_says_something() -> None:
    """No "--%" while the total is unknown, none beside bytes (the label says "x of y"), shown for steps."""
    from textual.app import App

    from optiq_tui.ui.widgets.job_bar import JobBar

    class One(App):
        def compose(self):
            yield JobBar(id="job-bar")

    app = One()
    async with app.run_test(size=(80, 5)) as pilot:
        bar = app.query_one(JobBar)
        percentage = bar.query_one("#job-progress #percentage")
        bar.start("Getting the demo model")
        await pilot.pause()
        assert bar.display and not percentage.display
        bar.show(Progress("download", 41_200_000, 108_000_000, unit="B"))
        assert not percentage.display
        bar.show(Progress("import", 3, 10, "tensors"))
        assert percentage.display


async def test_a_hidden_job_bar_does_not_animate() -> None:
    """The library (under every other screen) keeps its job bar: hidden, it must not tick 15 times a second."""
    from textual.app import App
    from textual.widgets._progress_bar import Bar

    from optiq_tui.ui.widgets.job_bar import JobBar

    class One(App):
        def compose(self):
            yield JobBar(id="job-bar")

    app = One()
    async with app.run_test(size=(80, 5)) as pilot:
        bar, animation = app.query_one(JobBar), app.query_one(Bar)
        await pilot.pause()
        assert not bar.display and animation.auto_refresh is None
        bar.start("Getting the demo model")  # no total yet: the indeterminate bar animates
        await pilot.pause()
        assert animation.auto_refresh is not None
        bar.stop()
        await pilot.pause()
        assert not bar.display and animation.auto_refresh is None
