"""A quantize in progress: stages, ETA, live per-layer sensitivity, log, summary."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Log, Static

from optiq_tui.engine.jobs import JobInfo
from optiq_tui.progress import Log as LogEvent
from optiq_tui.progress import OptiqError, Progress
from optiq_tui.ui.format import human_seconds
from optiq_tui.ui.screens.base import JobScreen
from optiq_tui.ui.screens.modals import ConfirmModal
from optiq_tui.ui.widgets.sensitivity_chart import SensitivityChart
from optiq_tui.ui.widgets.stage_list import StageList
from optiq_tui.ui.widgets.stage_progress import StageProgress

if TYPE_CHECKING:
    from optiq_tui.library.catalog import ModelInfo
    from optiq_tui.quant.config import QuantConfig


def summary_text(result: dict[str, Any]) -> Text:
    """The finished quant (the job's result) in a few lines: size, bits, and quality against uniform 4-bit."""
    text = Text()
    text.append(result["name"], "bold")
    method = f"OptiQ {result['preset']}" if result["method"] == "optiq" else "uniform"
    by_bits = sorted((int(b), n) for b, n in result["bit_histogram"].items())
    hist = " ".join(f"{'unq' if b >= 16 else b}:{n}" for b, n in by_bits)
    text.append(f"  {method} · layers by bits {hist}\n")
    target = f" (target {result['target_bpw']:g})" if result["target_bpw"] else ""
    text.append(f"achieved {result['achieved_bpw']:.3f} bits/weight{target}")
    text.append(f" · took {human_seconds(sum(result['timings'].values()))}")
    if result["cache_hit"]:
        text.append(" · sensitivities reused from cache")
    quality = result["quality"] or {}
    quant, uniform = quality.get("quant"), quality.get("uniform4")
    if quant:
        text.append(f"\nheld-out KL to the source {quant['mean_kl']:.4f} (p99 {quant['p99_kl']:.3f})")
        text.append(f" · top-1 {quant['top1']:.1%} · ppl {quant['ppl']:.2f}")
        if uniform and uniform.get("mean_kl"):
            ratio = quant["mean_kl"] / uniform["mean_kl"]
            text.append(f"\nuniform 4-bit: KL {uniform['mean_kl']:.4f}, top-1 {uniform['top1']:.1%}")
            text.append(f" → this quant has {ratio:.2f}x its KL", "bold")
    if result.get("refine"):
        from optiq_tui.measures.receipts import refine_line

        text.append(f"\nrefinement: {refine_line(result['refine'])}")
    text.append("\nenter: back to the library (new model highlighted) · c: chat with it", "dim")
    return text


class QuantizeProgressScreen(JobScreen):
    """Runs a quantize job of ``info`` with ``config`` in the engine (or follows a running one) and shows it."""

    # Short terminals (24 rows over SSH) get a lower chart, and the summary in place of the stages once done.
    VERTICAL_BREAKPOINTS = [(0, "-short"), (30, "-tall")]
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("escape,enter", "back", "Library"),
        Binding("c", "chat", "Chat with it"),
    ]

    def __init__(self, info: ModelInfo, config: QuantConfig, running: JobInfo | None = None) -> None:
        super().__init__()
        self.info = info
        self.config = config
        self.running = running  # a quantize already running in the engine, to follow from its start
        self.result: dict[str, Any] | None = None  # the job's result (QuantResult.to_dict())
        self.state = "running"  # running | cancelling | done | failed | cancelled
        self.events: list[Any] = []

    def compose(self) -> ComposeResult:
        from optiq_tui.quant.events import STAGES

        yield Header()
        with Horizontal(id="progress-top"):
            stages = StageList(STAGES, id="stages")
            stages.border_title = "Stages"
            yield stages
            with Vertical(id="stage-progress-box") as box:
                box.border_title = "Current stage"
                started = self.running.started or self.running.created if self.running else None
                yield StageProgress(STAGES, started=started, id="stage-progress")
                yield Static(self._settings_line(), id="quant-settings")
        yield Static("", id="summary")
        chart = SensitivityChart(id="sensitivity")
        chart.border_title = "Sensitivity per layer (KL at the lowest width, log scale; colour = bits chosen)"
        yield chart
        log = Log(id="quant-log", highlight=False, max_lines=2000)
        log.border_title = "Log"
        yield log
        yield Footer()

    def _settings_line(self) -> Text:
        c = self.config
        if c.uniform_bits:
            what = f"uniform {c.uniform_bits}-bit"
        else:
            what = f"{c.preset}: target {c.target_bpw:g} bpw, bits {','.join(map(str, c.bits))}"
        calib = str(c.calibration or "built-in calibration")
        if c.conversations:
            calib += f" + {len(c.conversations)} saved conversation{'' if len(c.conversations) == 1 else 's'}"
        if c.kv_bits:
            calib += f", KV cache {c.kv_bits}-bit"
        return Text(f"{self.info.name} → {c.name}\n{what}, group {c.group_size}, {calib}", style="dim")

    @classmethod
    def attached(cls, job: JobInfo) -> "QuantizeProgressScreen":
        """The progress view of a quantize the engine runs already (started before an SSH drop)."""
        from optiq_tui.library.catalog import inspect_model
        from optiq_tui.quant.config import QuantConfig

        return cls(inspect_model(job.args["model"]), QuantConfig.from_args(job.args.get("config")), job)

    def on_mount(self) -> None:
        self.sub_title = f"quantizing {self.info.name}"
        if self.running is not None:
            self.attach_job(self.running)
        else:
            self.start_job("quantize", model=str(self.info.path), config=self.config.to_args())

    # -- events ----------------------------------------------------------------

    async def job_event(self, job: JobInfo, event: Any) -> None:
        self.apply_event(event)

    def apply_event(self, event: Any) -> None:
        """Show one pipeline event (also used to replay recorded events)."""
        from optiq_tui.quant.events import LayerScore, StageChanged

        self.events.append(event)
        if isinstance(event, StageChanged):
            self.query_one(StageList).set_state(event.stage, event.state, event.seconds)
            self.query_one(StageProgress).stage_changed(event.stage, event.state)
        elif isinstance(event, Progress):
            self.query_one(StageProgress).progress(event)
        elif isinstance(event, LayerScore):
            self.query_one(SensitivityChart).add_score(event.layer, event.kl_by_bits, event.chosen_bits)
        elif isinstance(event, LogEvent):
            prefix = "" if event.level == "info" else f"[{event.level}] "
            self.query_one(Log).write_line(prefix + event.message)

    async def job_done(self, job: JobInfo) -> None:
        self.state = "done"
        self.result = job.result
        self.query_one(StageProgress).end("Finished.", complete=True)
        summary = self.query_one("#summary", Static)
        summary.update(summary_text(self.result))
        summary.display = True
        self.add_class("-done")
        self.app.library.refresh_catalog(highlight=self.result["path"])
        self.notify(f"{self.result['name']} is in the library.", title="Quantize finished")
        self._set_footer_hint()

    async def job_failed(self, job: JobInfo) -> None:
        self.state = "failed"
        self.query_one(StageList).stop_running("failed")
        self.query_one(StageProgress).end(f"Failed: {job.error}", complete=False)
        self.query_one(Log).write_line(f"[error] {job.error}")
        self.app.show_error("Quantize failed; nothing was kept", OptiqError(job.error or "failed"), "")
        self._set_footer_hint()

    def job_lost(self) -> None:
        self.state = "failed"
        self._set_footer_hint()

    async def job_cancelled(self, job: JobInfo) -> None:
        self.state = "cancelled"
        # The pipeline reports the interrupted stage as failed; here it was the user's choice.
        self.query_one(StageList).stop_running("cancelled", also=("failed",))
        self.notify("Quantize cancelled; nothing was kept.", severity="warning")
        self.dismiss()

    def _set_footer_hint(self) -> None:
        self.sub_title = f"{self.state}: {self.info.name} → {self.config.name}"
        self.refresh_bindings()

    # -- keys ------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel":
            return self.state in ("running", "cancelling")
        if action == "back":
            return self.state in ("done", "failed")
        if action == "chat":
            return self.state == "done"
        return True

    def action_cancel(self) -> None:
        if self.state != "running":
            return

        def answered(yes: bool | None) -> None:
            if yes and self.state == "running":
                self.state = "cancelling"
                self.run_worker(self.cancel_job(), group="cancel")
                self.query_one(StageProgress).status("Cancelling at the next safe point…")

        self.app.push_screen(
            ConfirmModal("Cancel quantize", "Stop quantizing? Nothing will be kept.", yes="Stop", no="Continue"),
            answered,
        )

    def action_back(self) -> None:
        self.dismiss()

    def action_chat(self) -> None:
        from optiq_tui.library.catalog import inspect_model

        new = inspect_model(self.result["path"])
        self.dismiss()
        self.app.library.open_screen("chat", "ChatScreen", new)
