"""`optiq-chat import FILE.gguf`: make an MLX model from a GGUF file (llama.cpp, Ollama, LM Studio)."""

from __future__ import annotations

import argparse
import json

from optiq_tui.commands._engine import add_engine_argument

HELP = "import a GGUF file (llama, Mistral, Qwen, Gemma, Phi-3, gpt-oss) as an MLX model in the library"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the .gguf file")
    parser.add_argument("--name", help="name in the library (default: the file name)")
    parser.add_argument(
        "--keep-quantized", action="store_true",
        help="keep Q4_0/Q4_1/Q8_0/MXFP4 weights exactly as they are (smaller) instead of dequantizing "
        "to float16 (the better source for `optiq-chat quantize`)",
    )
    parser.add_argument("--json", action="store_true", help="print the new model as JSON")
    add_engine_argument(parser)


def run(args: argparse.Namespace) -> int:
    import os
    from types import SimpleNamespace

    from optiq_tui.commands._engine import run_job
    from optiq_tui.commands._terminal import model_summary

    path = os.path.abspath(args.file)  # the engine process has another working folder
    info, code = run_job(
        args, lambda engine: engine.import_gguf(path, args.name, args.keep_quantized), json_out=args.json
    )
    if info is not None:
        print(json.dumps(info, indent=2) if args.json else f"imported {model_summary(SimpleNamespace(**info))}")
    return code
