"""The engine client: one interface, in-process or remote (optiq_tui.engine.remote).

Callers (CLI, UI, tests) submit jobs and follow their typed events; they
never pick a thread. :class:`EngineCalls` gives both implementations the same
typed methods on top of four primitives (submit, job, events, cancel).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Protocol, runtime_checkable

from optiq_tui.engine.jobs import JobInfo


@runtime_checkable
class EngineClient(Protocol):
    def submit(self, kind: str, **args: Any) -> JobInfo: ...
    def job(self, job_id: int) -> JobInfo: ...
    def jobs(self) -> list[JobInfo]: ...
    def events(self, job_id: int, after: int = 0) -> Iterator[Any]: ...
    def cancel(self, job_id: int) -> JobInfo: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def engine_line(status: dict[str, Any]) -> str:
    """Which engine a client is on, for people: "engine pid 4242 on ADDRESS, up 2 h, 1 job running"."""
    up = max(0.0, status.get("uptime_s", 0.0))
    took = f"{up / 3600:.0f} h" if up >= 5400 else f"{up / 60:.0f} min" if up >= 60 else f"{up:.0f} s"
    n = len(status.get("jobs", []))
    return (f"engine pid {status['pid']} on {status.get('address', '?')}, up {took}, "
            f"{n} job{'' if n == 1 else 's'} running")


class EngineCalls:
    """Typed calls shared by both clients; each returns the started job."""

    # The primitives each client implements.
    def submit(self, kind: str, **args: Any) -> JobInfo:
        raise NotImplementedError

    def job(self, job_id: int) -> JobInfo:
        raise NotImplementedError

    def events(self, job_id: int, after: int = 0) -> Iterator[Any]:
        raise NotImplementedError

    def cancel(self, job_id: int) -> JobInfo:
        raise NotImplementedError

    def load(self, model: str) -> JobInfo:
        return self.submit("load", model=model)

    def release(self) -> JobInfo:
        return self.submit("release")

    def chat(self, model: str, text: str, *, conversation: str | None = None, system: str | None = None,
             sampler: dict | None = None, effort: str | None = None, save: bool = True) -> JobInfo:
        return self.submit("chat", model=model, text=text, conversation=conversation, system=system,
                           sampler=sampler, effort=effort, save=save)

    def quantize(self, model: str, **config: Any) -> JobInfo:
        return self.submit("quantize", model=model, config=config)

    def plan(self, model: str, memory: str, context: int, *, kv_bits: int | None = None,
             group_size: int = 64) -> JobInfo:
        return self.submit("plan", model=model, memory=memory, context=context, kv_bits=kv_bits,
                           group_size=group_size)

    def eval(self, models: list[str], **options: Any) -> JobInfo:
        return self.submit("eval", models=list(models), **options)

    def compare(self, model_a: str, model_b: str, prompt: str, **options: Any) -> JobInfo:
        return self.submit("compare", model_a=model_a, model_b=model_b, prompt=prompt, **options)

    def import_gguf(self, path: str, name: str | None = None, keep_quantized: bool = False) -> JobInfo:
        return self.submit("import", path=path, name=name, keep_quantized=keep_quantized)

    def pull(self, repo: str) -> JobInfo:
        return self.submit("pull", repo=repo)

    def delete(self, model: str) -> JobInfo:
        return self.submit("delete", model=model)

    def wait_for(self, job_id: int) -> JobInfo:
        """Block until the job ends; returns its final state."""
        for _ in self.events(job_id):
            pass
        return self.job(job_id)

    def follow(self, job: JobInfo, on_event: Callable[[Any], None] | None = None) -> JobInfo:
        """Pass every event of ``job`` to ``on_event`` until it ends; returns its final state.

        Ctrl-C cancels the job and waits for it to stop (nothing half-made is
        kept); any other way of leaving (a hang-up) leaves it running.
        """
        try:
            for event in self.events(job.id):
                if on_event is not None:
                    on_event(event)
        except KeyboardInterrupt:
            self.cancel(job.id)
        return self.wait_for(job.id)


class InProcessClient(EngineCalls):
    """The engine inside this process (tests, debugging, ``--in-process``)."""

    def __init__(self, service: Any = None) -> None:
        from optiq_tui.engine.service import EngineService

        self._own = service is None
        self.service = service or EngineService()

    def submit(self, kind: str, **args: Any) -> JobInfo:
        return self.service.submit(kind, **args)

    def job(self, job_id: int) -> JobInfo:
        return self.service.job(job_id)

    def jobs(self) -> list[JobInfo]:
        return self.service.jobs()

    def events(self, job_id: int, after: int = 0) -> Iterator[Any]:
        while True:
            batch, ended = self.service.events(job_id, after, timeout=1.0)
            for after, event in batch:
                yield event
            if ended and not batch:
                return

    def cancel(self, job_id: int) -> JobInfo:
        return self.service.cancel(job_id)

    def status(self) -> dict[str, Any]:
        return {**self.service.status(), "address": "in-process"}

    def close(self) -> None:
        if self._own:
            self.service.close()
