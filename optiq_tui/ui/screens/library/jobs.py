"""The library's engine jobs: download, import, the demo model, delete; and the engine's running jobs.

A mixin of :class:`LibraryScreen` (a :class:`JobScreen`): the job bar shows the
one download or import it follows; deleting runs beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual import work

from optiq_tui.engine.jobs import JobInfo
from optiq_tui.progress import OptiqError
from optiq_tui.ui.format import human_bytes
from optiq_tui.ui.screens.modals import ConfirmModal, InputModal
from optiq_tui.ui.widgets.job_bar import JobBar
from optiq_tui.ui.widgets.model_details import display_path

if TYPE_CHECKING:
    from optiq_tui.library.catalog import ModelInfo

# Jobs the library's bar follows when it finds them running in the engine.
BAR_KINDS = ("pull", "import", "demo")


def bar_title(job: JobInfo) -> str:
    """The bar's words for a job, from its arguments (also for a job another TUI started)."""
    from pathlib import Path

    if job.kind == "pull":
        return f"Downloading {job.args.get('repo')}"
    if job.kind == "import":
        return f"Importing {Path(str(job.args.get('path'))).name}"
    if job.kind == "demo":
        return "Getting the demo model"
    return job.title


def job_view(job: JobInfo) -> Any:
    """The screen that follows a running ``job`` from its first event, or None for one that has none."""
    if job.kind == "quantize":
        from optiq_tui.ui.screens.quantize_progress import QuantizeProgressScreen

        return QuantizeProgressScreen.attached(job)
    if job.kind == "eval":
        from optiq_tui.ui.screens.eval import EvalScreen

        return EvalScreen.attached(job)
    if job.kind == "chat" and job.args.get("conversation"):  # an unsaved answer (save=False) has none to show
        from optiq_tui.ui.screens.chat import ChatScreen

        return ChatScreen.attached(job)
    return None


class LibraryJobs:
    """Starts and follows the library's jobs (mixed into LibraryScreen)."""

    BUSY_TEXT = "Another download or import is running; esc cancels it."

    def action_download(self) -> None:
        def asked(repo_id: str | None) -> None:
            if repo_id:
                self.start_job("pull", repo=repo_id.strip())

        self.app.push_screen(
            InputModal(
                "Download from the Hub",
                "Repository id (only the files MLX needs are downloaded; an interrupted download resumes):",
                placeholder="mlx-community/Qwen3-0.6B-4bit",
            ),
            asked,
        )

    def action_import_gguf(self) -> None:
        def asked(path: str | None) -> None:
            if path:
                from pathlib import Path

                # Absolute: the engine process does not share this process's working folder.
                self.start_job("import", path=str(Path(path).expanduser().absolute()))

        self.app.push_screen(
            InputModal("Import a GGUF file", "Path of the .gguf file:", placeholder="~/models/model.Q4_0.gguf"),
            asked,
        )

    def action_demo(self) -> None:
        self.start_job("demo")

    def action_delete(self) -> None:
        info = self.highlighted()
        if info is None:
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self._delete(info)

        where = "your Hugging Face cache" if info.source == "hf-cache" else "the library"
        question = (
            f"Delete {info.name} from {where}?\n\n{display_path(info.path)}\n\n"
            f"This frees {human_bytes(info.size_bytes)} and cannot be undone."
        )
        self.app.push_screen(ConfirmModal("Delete model", question, yes="Delete", no="Keep"), confirmed)

    @work(group="delete", exit_on_error=False)
    async def _delete(self, info: ModelInfo) -> None:
        # Quick, and never in the bar: it runs beside a download.
        engine = await self.app.client()
        job = await engine.submit("delete", model=str(info.path))
        async for _event in engine.events(job.id):
            pass
        job = await engine.job(job.id)
        if job.state != "done":
            self.app.show_error(f"Deleting {info.name} failed", OptiqError(job.error or job.state), "")
            return
        self.notify(f"Deleted {info.name}; freed {human_bytes(job.result['freed_bytes'])}.")
        self.refresh_catalog()

    def attach_running_jobs(self, running: list[JobInfo]) -> None:
        """Show what the engine ran when this TUI came: a quantize, an eval or an answer in its own view,
        a download in the bar."""
        others = []
        for job in running:
            view = job_view(job)
            if view is not None:
                self.app.push_screen(view)
            elif job.kind in BAR_KINDS:
                if self.job is None:
                    self.attach_job(job)
            else:
                others.append(job.title)
        if others:
            self.notify("Running in the engine: " + "; ".join(others), timeout=8)

    # ---- the followed job (JobScreen hooks) ---------------------------------

    async def job_started(self, job: JobInfo) -> None:
        self.query_one(JobBar).start(bar_title(job))

    async def job_event(self, job: JobInfo, event: Any) -> None:
        self.query_one(JobBar).show(event)

    async def job_done(self, job: JobInfo) -> None:
        self.query_one(JobBar).stop()
        self.notify(f"{job.result['name']} is in the library.", title="Done")
        self.refresh_catalog(highlight=job.result["path"])

    async def job_failed(self, job: JobInfo) -> None:
        self.query_one(JobBar).stop()
        self.app.show_error(f"{bar_title(job)} failed", OptiqError(job.error or "failed"), "")

    async def job_cancelled(self, job: JobInfo) -> None:
        self.query_one(JobBar).stop()
        self.notify(f"{bar_title(job)}: cancelled; nothing was kept.", severity="warning")

    def job_lost(self) -> None:
        self.query_one(JobBar).stop()
