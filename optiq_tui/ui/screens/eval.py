"""The quick-eval screen: KL, perplexity, top-1 and retrieval against a reference."""

from __future__ import annotations

import threading
from typing import Any, Callable

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Label, ProgressBar

from optiq_tui.progress import Log, Progress
from optiq_tui.ui.messages import JobCancelled, JobFailed, JobFinished, JobProgressed
from optiq_tui.ui.widgets.eval_table import EvalTable
from optiq_tui.ui.widgets.quality_chart import Point, QualityChart
from optiq_tui.ui.widgets.model_details import display_path


def default_reference(models: list[Any]) -> Any:
    """Until provenance is read: an unquantized model of the list, if there is one."""
    unquantized = [m for m in models if m.quant_kind == "none"]
    return max(unquantized, key=lambda m: m.bpw) if unquantized else None


class EvalScreen(Screen):
    """Pick models and a reference, run the quick eval, read the table and chart, export."""

    CSS_PATH = "eval.tcss"

    BINDINGS = [
        # Priority: the results table would take Enter for its own row selection.
        Binding("enter,g", "run", "Run eval", priority=True),
        Binding("a", "add_model", "Add model"),
        Binding("x", "remove_model", "Remove last"),
        Binding("r", "pick_reference", "Reference"),
        Binding("p", "toggle_probe", "Retrieval probe"),
        Binding("m", "export('markdown')", "Export .md"),
        Binding("j", "export('json')", "Export .json"),
        Binding("escape", "cancel_or_back", "Cancel/Back"),
    ]

    def __init__(self, models: list[Any], *, retrieval: bool = True) -> None:
        super().__init__()
        self.reference = default_reference(models)
        self.models = [m for m in models if self.reference is None or m.path != self.reference.path]
        self.retrieval = retrieval
        self.report: Any = None
        self.rows: list[Any] = []
        self._job: Any = None
        self._find_job: Any = None
        self._run_when_found = False

    def compose(self) -> ComposeResult:
        yield Label("Quick eval · KL, perplexity and top-1 against a reference; retrieval probe", id="eval-title")
        yield Label("", id="eval-setup")
        yield ProgressBar(id="eval-progress", show_eta=True)
        yield Label("", id="eval-status")
        yield EvalTable(id="eval-table")
        yield QualityChart(id="eval-chart")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#eval-progress").display = False
        self._show_setup()
        self._status("Enter runs the eval · a adds a model · r picks the reference · p toggles the retrieval probe")
        if self.reference is None and self.models:
            models = list(self.models)

            def find() -> Any:
                from optiq_tui.eval.quality import find_reference

                return find_reference(models)

            # Provenance lookup reads the library and imports the eval stack: off the UI thread.
            self._find_job = self.app.bridge.submit_call(self, find, name="find-reference")

    @property
    def running(self) -> bool:
        return self._job is not None

    def _show_setup(self) -> None:
        names = ", ".join(m.name for m in self.models) or "(none: press a)"
        ref = self.reference.name if self.reference is not None else "(none: press r; KL and top-1 need one)"
        # The probe's prompts are 512-2,048 tokens: measured ~20 min per model for the 135M
        # demo on the 2-core CPU dev machine, well under a minute on Apple Silicon.
        probe = (
            "on (long prompts: minutes per model on a CPU, less on Apple Silicon; p turns it off)"
            if self.retrieval
            else "off (p turns it on)"
        )
        self.query_one("#eval-setup", Label).update(
            f"[b]Models:[/b] {names}\n[b]Reference:[/b] {ref}\n[b]Retrieval probe:[/b] {probe}\n"
            "[dim]Held-out text and settings of its own: figures differ from a quantize summary's.[/dim]"
        )

    def _status(self, text: str) -> None:
        self.query_one("#eval-status", Label).update(text)

    # ---- picking ------------------------------------------------------

    def action_add_model(self) -> None:
        from optiq_tui.ui.screens.model_picker import ModelPickerModal

        def picked(info: Any) -> None:
            if info is not None and all(m.path != info.path for m in self.models):
                self.models.append(info)
                self._show_setup()

        self.app.push_screen(ModelPickerModal("Add a model to the eval"), picked)

    def action_remove_model(self) -> None:
        if self.models and not self.running:
            self.models.pop()
            self._show_setup()

    def action_pick_reference(self) -> None:
        from optiq_tui.ui.screens.model_picker import ModelPickerModal

        def picked(info: Any) -> None:
            if info is not None:
                self.reference = info
                self.models = [m for m in self.models if m.path != info.path]
                self._show_setup()

        self.app.push_screen(ModelPickerModal("Reference model (the unquantized source)"), picked)

    def action_toggle_probe(self) -> None:
        self.retrieval = not self.retrieval
        self._show_setup()

    # ---- running ------------------------------------------------------

    def action_run(self) -> None:
        if self.running:
            self.notify("The eval is running: Esc cancels it.", severity="warning")
            return
        if self._find_job is not None:
            # The reference is still being looked up; run as soon as it is known.
            self._run_when_found = True
            self._status("looking up the reference model; the eval starts next…")
            return
        if not self.models and self.reference is None:
            self.notify("Pick at least one model (a).", severity="warning")
            return
        models, reference, retrieval = list(self.models), self.reference, self.retrieval

        def job(emit: Callable[[Any], None], cancel: threading.Event) -> Any:
            from optiq_tui.eval import quality

            return quality.evaluate(models, reference, retrieval=retrieval, progress=emit, cancel=cancel)

        self.rows = []
        self.query_one(EvalTable).show_rows([])
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        against = f"against {reference.name}" if reference is not None else "with no reference (perplexity only; r picks one)"
        self._status(f"evaluating {len(models)} model(s) {against}…")
        self._job = self.app.bridge.submit(self, job, name="eval")

    def _run_if_waiting(self) -> None:
        if self._run_when_found:
            self._run_when_found = False
            self.action_run()

    def on_job_progressed(self, message: JobProgressed) -> None:
        # Only the eval job reports progress, and it has imported the eval stack by now.
        from optiq_tui.eval.quality import ModelEvaluated

        event = message.event
        if isinstance(event, Progress):
            self.query_one("#eval-progress", ProgressBar).update(total=event.total, progress=event.done)
            self._status(f"{event.stage}: {event.message}" if event.message else event.stage)
        elif isinstance(event, Log):
            self._status(event.message)
        elif isinstance(event, ModelEvaluated):
            # A row is done: show it before the others finish.
            self.rows.append(event.row)
            self._show_rows(self.rows)

    def on_job_finished(self, message: JobFinished) -> None:
        if message.handle is self._find_job:
            self._find_job = None
            if message.result is not None and self.reference is None:
                self.reference = message.result
                self.models = [m for m in self.models if m.path != message.result.path]
                self._show_setup()
            self._run_if_waiting()
        elif message.handle is self._job:
            self._job = None
            self.query_one("#eval-progress").display = False
            self.show_report(message.result)
        elif message.handle.name == "export":
            self.notify(f"Saved {message.result}")

    def on_job_failed(self, message: JobFailed) -> None:
        if message.handle is self._find_job:
            self._find_job = None  # no provenance: the user picks a reference with r
            self._run_if_waiting()
        elif message.handle is self._job:
            self._job = None
            self.query_one("#eval-progress").display = False
            self._status(f"[b]eval failed:[/b] {message.error}")
            self.app.show_error("Eval failed", message.error, message.details)
        else:
            self.app.show_error(f"{message.handle.name} failed", message.error, message.details)

    def on_job_cancelled(self, message: JobCancelled) -> None:
        if message.handle is self._job:
            self._job = None
            self.query_one("#eval-progress").display = False
            self._status("eval cancelled; nothing was saved")

    def show_report(self, report: Any) -> None:
        """Fill the table and the chart, and save the report with its date and settings."""
        from optiq_tui.eval import reports

        self.report = report
        self.rows = list(report.rows)
        self._show_rows(self.rows)
        path = reports.save_report(report)
        self._status(f"done · saved to {display_path(path)} · m/j export Markdown/JSON")

    def _show_rows(self, rows: list[Any]) -> None:
        self.query_one(EvalTable).show_rows(rows)
        self.query_one(QualityChart).set_points(
            # The reference sits at KL 0: the scale the quants are read against.
            [Point(r.name + (" (ref)" if r.is_reference else ""), r.bpw, r.mean_kl) for r in rows if r.mean_kl is not None]
        )

    def action_export(self, kind: str) -> None:
        """Ask where to write the report (Markdown or JSON), then write it off the UI thread."""
        if self.report is None:
            self.notify("Run the eval first (Enter).", severity="warning")
            return
        from optiq_tui.eval import reports
        from optiq_tui.ui.screens.modals import InputModal

        report = self.report
        suffix = ".md" if kind == "markdown" else ".json"
        from optiq_tui.settings import paths

        # The same folder as exported conversations: one place for what the user takes away.
        default = paths().exports / f"eval-{report.created[:10]}{suffix}"

        def chosen(path: str | None) -> None:
            if path:
                self.app.bridge.submit_call(self, lambda: reports.export(report, path), name="export", mlx=False)

        self.app.push_screen(
            InputModal(f"Export {kind}", "Write the report to:", value=str(default)), chosen
        )

    def action_cancel_or_back(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self._status("cancelling…")
        else:
            self.app.pop_screen()
