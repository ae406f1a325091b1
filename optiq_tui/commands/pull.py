"""`optiq-chat pull REPO`: download an MLX model from the Hugging Face Hub (resumable)."""

from __future__ import annotations

import argparse
import json

from optiq_tui.commands._engine import add_engine_argument

HELP = "download an MLX model from the Hugging Face Hub (only the files MLX needs; resumes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", help="repo id, e.g. mlx-community/SmolLM2-135M-Instruct")
    parser.add_argument("--json", action="store_true", help="print the model as JSON")
    add_engine_argument(parser)


def run(args: argparse.Namespace) -> int:
    from types import SimpleNamespace

    from optiq_tui.commands._engine import run_job
    from optiq_tui.commands._terminal import model_summary

    # The download is the engine's job: a dropped SSH session does not stop it.
    info, code = run_job(args, lambda engine: engine.pull(args.repo), json_out=args.json)
    if info is not None:
        print(json.dumps(info, indent=2) if args.json else f"downloaded {model_summary(SimpleNamespace(**info))}")
    return code
