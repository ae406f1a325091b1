"""`optiq-chat pull REPO`: download an MLX model from the Hugging Face Hub (resumable)."""

from __future__ import annotations

import argparse
import json

HELP = "download an MLX model from the Hugging Face Hub (only the files MLX needs; resumes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", help="repo id, e.g. mlx-community/SmolLM2-135M-Instruct")
    parser.add_argument("--json", action="store_true", help="print the model as JSON")


def run(args: argparse.Namespace) -> int:
    from optiq_tui.commands._terminal import model_summary, run_with_progress
    from optiq_tui.library.hub import pull

    info, code = run_with_progress(lambda progress: pull(args.repo, progress=progress), json_out=args.json)
    if info is not None:
        print(json.dumps(info.to_dict(), indent=2) if args.json else f"downloaded {model_summary(info)}")
    return code
