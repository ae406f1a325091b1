"""`optiq-chat serve`: the engine process in the foreground; `--status` and `--stop` for a running one."""

from __future__ import annotations

import argparse
import json
import sys
import time

HELP = "run the engine (models and jobs) in the foreground, or show (--status) or stop (--stop) the running one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; any other requires the API key)")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one, recorded for clients)")
    parser.add_argument("--idle-timeout", type=float, default=None, metavar="S",
                        help="exit after S seconds with no client and no job (default 600, "
                             "or OPTIQ_ENGINE_IDLE_S; 0: never)")
    parser.add_argument("--status", action="store_true", help="print the running engine's pid, address and jobs")
    parser.add_argument("--stop", action="store_true", help="stop the running engine (its jobs are cancelled)")
    parser.add_argument("--json", action="store_true", help="with --status: print JSON")


def _status(as_json: bool) -> int:
    from optiq_tui.engine.client import engine_line
    from optiq_tui.server.process import connect

    client = connect()
    if client is None:
        print("no engine is running", file=sys.stderr)
        return 1
    status = client.status()
    if as_json:
        print(json.dumps(status, indent=2))
        return 0
    print(engine_line(status))
    for job in status["jobs"]:
        print(f"  {job['id']:>4}  {job['state']:<8}  {job['title']}")
    return 0


def _stop() -> int:
    from optiq_tui.server import state
    from optiq_tui.server.process import connect

    client = connect()
    if client is None:
        print("no engine is running", file=sys.stderr)
        return 1
    pid = client.status()["pid"]
    client.shutdown()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and state.read_record() is not None:
        time.sleep(0.05)
    print(f"stopped engine pid {pid}")
    return 0


def run(args: argparse.Namespace) -> int:
    from optiq_tui.progress import OptiqError
    from optiq_tui.server.process import serve

    try:
        if args.status:
            return _status(args.json)
        if args.stop:
            return _stop()
        return serve(args.host, args.port, args.idle_timeout)
    except OptiqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
