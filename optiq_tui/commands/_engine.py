"""How headless commands reach the engine: the running engine process, a new one, or in-process.

``--in-process`` (or ``OPTIQ_ENGINE=in-process``, which the test suite sets)
keeps everything in this process as before the engine process existed.
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Callable


def add_engine_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in-process", action="store_true",
                        help="run the job in this process instead of the engine process (debugging, tests)")


def client(args: argparse.Namespace, *, start: bool = True) -> Any:
    """The engine client this command should use; ``start=False``: in-process when no engine runs."""
    from optiq_tui.server.process import open_client

    # A hang-up (SSH drop) ends this client without cancelling anything: only Ctrl-C
    # (KeyboardInterrupt, see EngineCalls.follow) cancels; the job is the engine's.
    return open_client(in_process=getattr(args, "in_process", False), start=start)


def submit_and_follow(engine: Any, submit: Callable[[], Any], on_event: Callable[[Any], None] | None) -> Any:
    """Start a job and follow it to its end; Ctrl-C cancels it, also while it is being submitted.

    The engine can start the job before the submit call returns: a Ctrl-C then would end this
    client with the job left running, so it is held until the job's id is known.
    """
    import signal
    import threading

    interrupted: list[bool] = []
    held = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True)) if held else None
    try:
        job = submit()
    finally:
        if held:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        engine.cancel(job.id)
        return engine.wait_for(job.id)
    return engine.follow(job, on_event)


def finish(job: Any) -> tuple[dict | None, int]:
    """(result, 0) of an ended job, or (None, exit code) after printing why it did not finish."""
    import sys

    if job.state == "done":
        return job.result, 0
    if job.state == "cancelled":
        print("cancelled; nothing half-made was kept", file=sys.stderr)
        return None, 130
    print(f"error: {job.error}", file=sys.stderr)
    return None, 1


def model_arg(model: str) -> str:
    """A model argument as the engine process sees it: a folder path made absolute (its cwd differs)."""
    return os.path.abspath(model) if os.path.exists(model) else model


def run_job(args: argparse.Namespace, submit: Callable[[Any], Any], *, json_out: bool = False,
            progress: Callable[[Any], Callable[[Any], None]] | None = None,
            start_engine: bool = True) -> tuple[dict | None, int]:
    """Start a job with ``submit(client)``, show its events, and return (result, 0) or (None, exit code).

    ``progress(terminal)`` makes the event handler (default: the terminal progress line);
    ``start_engine=False`` runs it in-process when no engine runs (quick jobs).
    Errors are printed (and as JSON on stdout with ``json_out``).
    """
    import json
    import sys

    from optiq_tui.commands._terminal import TerminalProgress
    from optiq_tui.progress import OptiqError

    terminal = TerminalProgress()
    try:
        engine = client(args, start=start_engine)
        job = submit_and_follow(engine, lambda: submit(engine), progress(terminal) if progress else terminal)
        error = job.error
    except OptiqError as exc:
        job, error = None, str(exc)
    terminal.done()
    if job is not None and job.state != "failed":
        return finish(job)
    if json_out:
        print(json.dumps({"error": error}))
    print(f"error: {error}", file=sys.stderr)
    return None, 1
