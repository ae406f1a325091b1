"""`optiq-chat jobs`: what the engine is doing and has done; `--follow ID` re-attaches, `--cancel ID` stops one."""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "list the engine's jobs (running, finished, interrupted), or cancel one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cancel", type=int, metavar="ID", help="cancel job ID")
    parser.add_argument("--follow", type=int, metavar="ID",
                        help="show job ID's progress (from its start) until it ends; Ctrl-C cancels it")
    parser.add_argument("--json", action="store_true", help="print the jobs as JSON")


def _line(job) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(job.created))
    extra = f"  ({job.error})" if job.error else ""
    return f"{job.id:>4}  {job.state:<11}  {when}  {job.title}{extra}"


def _printer(terminal):
    """Show any job's events: stage lines, progress, logs, and a chat answer's text."""
    from optiq_tui.engine.events import AnswerDelta
    from optiq_tui.engine.wire import event_type

    def show(event) -> None:
        kind = event_type(event)
        if kind == "StageChanged" and event.state in ("done", "skipped", "failed"):
            terminal.done()
            print(f"{event.stage}: {event.state}", file=sys.stderr, flush=True)
        elif isinstance(event, AnswerDelta):
            print(event.text, end="", flush=True)
        elif kind in ("Progress", "Log"):
            terminal(event)

    return show


def _follow(client, job_id: int) -> int:
    from optiq_tui.commands._engine import finish
    from optiq_tui.commands._terminal import TerminalProgress

    terminal = TerminalProgress()
    job = client.follow(client.job(job_id), _printer(terminal))
    terminal.done()
    result, code = finish(job)
    if result is not None:
        print(json.dumps(result, indent=2) if job.kind != "chat" else "")
    return code


def run(args: argparse.Namespace) -> int:
    from optiq_tui.progress import OptiqError
    from optiq_tui.server.process import connect

    client = connect()
    if client is None:
        print("no engine is running (jobs live in the engine: `optiq-chat serve`)", file=sys.stderr)
        return 1
    try:
        if args.follow is not None:
            return _follow(client, args.follow)
        if args.cancel is not None:
            job = client.cancel(args.cancel)
            print(f"asked job {job.id} ({job.title}) to stop")
            return 0
        jobs = client.jobs()
    except OptiqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([j.to_dict() for j in jobs], indent=2))
    elif not jobs:
        print("no jobs")
    else:
        print("\n".join(_line(j) for j in jobs))
    return 0
