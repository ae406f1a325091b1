"""`optiq-chat import FILE.gguf`: make an MLX model from a GGUF file (llama.cpp, Ollama, LM Studio)."""

from __future__ import annotations

import argparse
import json

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


def run(args: argparse.Namespace) -> int:
    from optiq_tui.commands._terminal import model_summary, run_with_progress
    from optiq_tui.library.gguf_import import import_gguf

    info, code = run_with_progress(
        lambda progress: import_gguf(args.file, args.name, keep_quantized=args.keep_quantized, progress=progress),
        json_out=args.json,
    )
    if info is not None:
        print(json.dumps(info.to_dict(), indent=2) if args.json else f"imported {model_summary(info)}")
    return code
