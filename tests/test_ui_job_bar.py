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
