"""`optiq-chat jobs`: what the engine is doing and has done; `--cancel ID` stops one."""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "list the engine's jobs (running, finished, interrupted), or cancel one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cancel", type=int, metavar="ID", help="cancel job ID")
    parser.add_argument("--json", action="store_true", help="print the jobs as JSON")


def _line(job) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(job.created))
    extra = f"  ({job.error})" if job.error else ""
    return f"{job.id:>4}  {job.state:<11}  {when}  {job.title}{extra}"


def run(args: argparse.Namespace) -> int:
    from optiq_tui.progress import OptiqError
    from optiq_tui.server.process import connect

    client = connect()
    if client is None:
        print("no engine is running (jobs live in the engine: `optiq-chat serve`)", file=sys.stderr)
        return 1
    try:
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
