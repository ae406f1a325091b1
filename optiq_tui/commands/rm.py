"""`optiq-chat rm NAME`: delete a model (asks first on a terminal), showing the space freed."""

from __future__ import annotations

import argparse
import json
import sys

from optiq_tui.commands._engine import add_engine_argument

HELP = "delete a model from the library or the Hugging Face cache"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", help="library name, repo id, or folder")
    parser.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_engine_argument(parser)


def run(args: argparse.Namespace) -> int:
    from optiq_tui.commands._engine import model_arg, run_job
    from optiq_tui.sizes import human_bytes
    from optiq_tui.library.catalog import resolve
    from optiq_tui.progress import OptiqError

    try:
        info = resolve(args.name)
        if not args.yes:
            if not sys.stdin.isatty():
                raise OptiqError(f"not deleting {info.name} without confirmation; pass --yes")
            answer = input(f"delete {info.name} ({human_bytes(info.size_bytes)}, {info.path})? [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("kept", file=sys.stderr)
                return 1
    except OptiqError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Through a running engine, which first releases the model if it holds it; none is started for this.
    result, code = run_job(args, lambda engine: engine.delete(model_arg(args.name)), json_out=args.json,
                           start_engine=False)
    if result is None:
        return code
    freed = result["freed_bytes"]
    if args.json:
        print(json.dumps({"deleted": info.name, "path": str(info.path), "freed_bytes": freed}))
    else:
        print(f"deleted {info.name}, freed {human_bytes(freed)}")
    return 0
