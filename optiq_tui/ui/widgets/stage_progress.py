"""A long job's progress over all its stages: what runs now, one bar for the whole job, time left.

The bar counts finished stages plus the running stage's own fraction, so it
moves at every stage change and every progress event. The time left is the
running stage's: its elapsed time scaled by the fraction still to do. It is
recomputed every second from the real elapsed time, so a stage that stalls
shows its estimate growing instead of a countdown that reaches zero.
"""

from __future__ import annotations

from time import monotonic, time

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, ProgressBar

from optiq_tui.progress import Progress
from optiq_tui.ui.format import human_seconds

# States after which a stage counts as behind the job (see StageList.ALIASES).
FINISHED = ("done", "finished", "skipped", "cached")
# Below this fraction, or this early in a stage, a rate says little about the rest.
MIN_FRACTION = 0.05
MIN_ELAPSED_S = 2.0


def time_left(elapsed_s: float, fraction: float | None) -> float | None:
    """Seconds left in a stage ``fraction`` done after ``elapsed_s``, or None when unknown."""
    if fraction is None or fraction < MIN_FRACTION or elapsed_s < MIN_ELAPSED_S or fraction >= 1:
        return None
    return elapsed_s * (1 - fraction) / fraction


class StageProgress(Vertical):
    """The running stage's line, the whole job's bar, and the stage's time left."""

    DEFAULT_CSS = """
    StageProgress { height: auto; }
    StageProgress > Label { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    StageProgress > #stage-eta { color: $text-muted; }
    """

    def __init__(self, stages: tuple[str, ...] | list[str], started: float | None = None, **kwargs) -> None:
        """``started``: when the job began (epoch seconds), for a view attached to a running job."""
        super().__init__(**kwargs)
        self._started_epoch = started
        self.stages = list(stages)
        self.finished: set[str] = set()
        self.running: str | None = None
        self.fraction: float | None = None  # of the running stage
        self._stage_started = self._job_started = monotonic()
        self._ended = False

    def compose(self) -> ComposeResult:
        yield Label("Starting…", id="stage-label")
        yield ProgressBar(id="stage-bar", total=len(self.stages), show_eta=False)
        yield Label("", id="stage-eta")

    def on_mount(self) -> None:
        # A job followed after an SSH drop has run for a while already: count from its real start.
        ran = max(0.0, time() - self._started_epoch) if self._started_epoch else 0.0
        self._job_started = monotonic() - ran
        self.set_interval(1.0, self._show_time)

    @property
    def overall(self) -> float:
        """Stages behind the job plus the running one's fraction, in stages."""
        return len(self.finished) + (self.fraction or 0.0 if self.running else 0.0)

    def stage_changed(self, stage: str, state: str) -> None:
        if stage not in self.stages:
            self.stages.append(stage)
            self.query_one(ProgressBar).update(total=len(self.stages))
        if state in ("running", "started", "start"):
            self.running, self.fraction = stage, None
            self._stage_started = monotonic()
            self.status(f"{stage}…")
        elif state in FINISHED:
            self.finished.add(stage)
            if self.running == stage:
                self.running, self.fraction = None, None
        self._show()

    def progress(self, event: Progress) -> None:
        if event.stage == self.running:
            self.fraction = event.fraction
        detail = event.message or ""
        count = f"{event.done:g}/{event.total:g}" if event.total else f"{event.done:g}"
        unit = f" {event.unit}" if event.unit and event.unit != "B" else ""
        self.status(f"{event.stage}: {count}{unit} {detail}".rstrip())
        self._show()

    def status(self, text: str) -> None:
        self.query_one("#stage-label", Label).update(text)

    def end(self, text: str, *, complete: bool) -> None:
        """The job ended: ``text`` on the stage line, the bar full when ``complete``."""
        took = human_seconds(monotonic() - self._job_started)
        self.query_one("#stage-eta", Label).update(f"took {took}" if complete else f"stopped after {took}")
        self._ended = True
        self.running = None
        if complete:
            self.finished.update(self.stages)
        self.status(text)
        self.query_one(ProgressBar).update(progress=self.overall)

    def _show(self) -> None:
        self.query_one(ProgressBar).update(progress=self.overall)
        self._show_time()

    def _show_time(self) -> None:
        if self._ended:
            return
        now = monotonic()
        parts = [
            f"stage {min(len(self.finished) + 1, len(self.stages))} of {len(self.stages)}",
            f"{human_seconds(now - self._job_started)} so far",
        ]
        if self.running:
            left = time_left(now - self._stage_started, self.fraction)
            parts.append(f"{self.running}: about {human_seconds(left)} left" if left is not None
                         else f"{self.running}: {human_seconds(now - self._stage_started)}")
        self.query_one("#stage-eta", Label).update(" · ".join(parts))
