"""The quick-eval screen: KL, perplexity, top-1 and retrieval against a reference."""

from __future__ import annotations

import asyncio
from typing import Any

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Label, ProgressBar

from optiq_tui.engine.jobs import JobInfo
from optiq_tui.progress import Log, OptiqError, Progress
from optiq_tui.ui.screens.base import JobScreen, event_name
from optiq_tui.ui.widgets.eval_table import EvalTable
from optiq_tui.ui.widgets.quality_chart import Point, QualityChart
from optiq_tui.ui.widgets.model_details import display_path


def default_reference(models: list[Any]) -> Any:
    """Until provenance is read: an unquantized model of the list, if there is one."""
    unquantized = [m for m in models if m.quant_kind == "none"]
    return max(unquantized, key=lambda m: m.bpw) if unquantized else None


class EvalScreen(JobScreen):
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

    def __init__(self, models: list[Any], *, retrieval: bool = True, running: JobInfo | None = None) -> None:
        super().__init__()
        self.reference = default_reference(models)
        self.models = [m for m in models if self.reference is None or m.path != self.reference.path]
        self.retrieval = retrieval
        self.report: Any = None
        self.rows: list[Any] = []
        self._finding = False
        self._run_when_found = False
        self._running_job = running  # an eval already running in the engine, to follow from its start

    @classmethod
    def attached(cls, job: JobInfo) -> "EvalScreen":
        """The eval view of an eval the engine runs already (started before an SSH drop, or by another TUI)."""
        from optiq_tui.library.catalog import inspect_model

        screen = cls([inspect_model(p) for p in job.args["models"]], retrieval=job.args.get("retrieval", True),
                     running=job)
        # The job's own reference, not one guessed from the list (None: the engine looks it up).
        reference = job.args.get("reference")
        screen.reference = inspect_model(reference) if reference else None
        screen.models = [m for m in screen.models if screen.reference is None or m.path != screen.reference.path]
        return screen

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
        if self._running_job is not None:
            # Its progress and finished rows are replayed from the job's first event.
            ref = self.reference
            self._show_running(len(self.models), f"against {ref.name}" if ref else "against the source its quants name")
            self.attach_job(self._running_job)
        elif self.reference is None and self.models:
            self._finding = True
            self._find_reference(list(self.models))

    @work(group="find-reference")
    async def _find_reference(self, models: list[Any]) -> None:
        from optiq_tui.library.provenance import find_reference

        # Provenance lookup reads the library and imports the eval stack: off the UI thread.
        try:
            found = await asyncio.to_thread(find_reference, models)
        except Exception:  # noqa: BLE001 - no provenance: the user picks a reference with r
            found = None
        self._finding = False
        if found is not None and self.reference is None:
            self.reference = found
            self.models = [m for m in self.models if m.path != found.path]
            self._show_setup()
        if self._run_when_found:
            self._run_when_found = False
            self.action_run()

    @property
    def running(self) -> bool:
        return self.job_running

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
        if self._finding:
            # The reference is still being looked up; run as soon as it is known.
            self._run_when_found = True
            self._status("looking up the reference model; the eval starts next…")
            return
        if not self.models and self.reference is None:
            self.notify("Pick at least one model (a).", severity="warning")
            return
        models, reference = list(self.models), self.reference
        against = f"against {reference.name}" if reference is not None else "with no reference (perplexity only; r picks one)"
        self._show_running(len(models), against)
        # The engine saves the report (so it survives this screen); the cards stay as they are.
        self.start_job("eval", models=[str(m.path) for m in models],
                       reference=str(reference.path) if reference is not None else None,
                       retrieval=self.retrieval, card=False)

    def _show_running(self, n_models: int, against: str) -> None:
        """Clear the results, show the progress bar and what runs ("evaluating 2 model(s) against X…")."""
        self.rows = []
        self.query_one(EvalTable).show_rows([])
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.update(total=None, progress=0)
        bar.display = True
        self._status(f"evaluating {n_models} model(s) {against}…")

    async def job_event(self, job: JobInfo, event: Any) -> None:
        if isinstance(event, Progress):
            self.query_one("#eval-progress", ProgressBar).update(total=event.total, progress=event.done)
            self._status(f"{event.stage}: {event.message}" if event.message else event.stage)
        elif isinstance(event, Log):
            self._status(event.message)
        elif event_name(event) == "ModelEvaluated":
            # A row is done: show it before the others finish.
            self.rows.append(event.row)
            self._show_rows(self.rows)

    async def job_done(self, job: JobInfo) -> None:
        from optiq_tui.eval.reports import report_from_dict

        self.query_one("#eval-progress").display = False
        # The eval stack imports MLX: rebuilt off the UI thread.
        report = await asyncio.to_thread(report_from_dict, job.result["report"])
        self.show_report(report, job.result["saved"])

    async def job_failed(self, job: JobInfo) -> None:
        self.query_one("#eval-progress").display = False
        self._status(f"[b]eval failed:[/b] {job.error}")
        self.app.show_error("Eval failed", OptiqError(job.error or "failed"), "")

    async def job_cancelled(self, job: JobInfo) -> None:
        self.query_one("#eval-progress").display = False
        self._status("eval cancelled; nothing was saved")

    def job_lost(self) -> None:
        self.query_one("#eval-progress").display = False

    def show_report(self, report: Any, saved: str) -> None:
        """Fill the table and the chart; say where the engine saved the report."""
        self.report = report
        self.rows = list(report.rows)
        self._show_rows(self.rows)
        self._status(f"done · saved to {display_path(saved)} · m/j export Markdown/JSON")

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
        from optiq_tui.ui.screens.modals import export_dialog

        report = self.report
        suffix = ".md" if kind == "markdown" else ".json"
        from optiq_tui.settings import paths

        # The same folder as exported conversations: one place for what the user takes away.
        default = paths().exports / f"eval-{report.created[:10]}{suffix}"

        def chosen(path: str | None) -> None:
            if path:
                self._export(report, path)

        self.app.push_screen(
            export_dialog(f"Export {kind}", "the report", default), chosen
        )

    @work(group="export")
    async def _export(self, report: Any, path: str) -> None:
        from optiq_tui.eval import reports

        self.notify(f"Saved {await asyncio.to_thread(reports.export, report, path)}")

    def action_cancel_or_back(self) -> None:
        if self.job_running:
            self.run_worker(self.cancel_job(), group="cancel")
            self._status("cancelling…")
        else:
            self.app.pop_screen()
