"""`optiq-chat plan MODEL --memory 16GB --context 32768`: the bits per weight that fit."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "the target bits per weight for a quant of MODEL that chats at a given context within a memory size"


def _kv_bits(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--kv-bits takes a width like 8 or 4, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help='library name, folder path, or "demo" (the unquantized source)')
    parser.add_argument("--memory", required=True,
                        help="memory to fit in, e.g. 16GB or 512MB (decimal units, like the library's sizes)")
    parser.add_argument("--context", type=int, default=32768, help="tokens of context to hold (default 32768)")
    parser.add_argument("--kv-bits", type=_kv_bits, default=None,
                        help="quantize the KV cache to this width (mlx-lm's kv_bits, groups of 64)")
    parser.add_argument("--group-size", type=int, default=64, choices=[32, 64, 128],
                        help="group size of the planned quant (default 64)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from optiq_tui.engine.loader import as_info
    from optiq_tui.sizes import human_bytes
    from optiq_tui.progress import OptiqError
    from optiq_tui.quant.plan import model_memory, parse_memory, plan

    try:
        memory = parse_memory(args.memory)
        info = as_info(args.model)
        result = plan(model_memory(Path(info.path)), memory, args.context,
                      kv_bits=args.kv_bits, group_size=args.group_size)
    except OptiqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    p = result.peak
    kv = f"{args.kv_bits}-bit" if args.kv_bits else "unquantized"
    what = "unquantized" if result.unquantized_fits else f"a {result.target_bpw:.2f} bpw quant"
    print(f"{info.name} fits in {human_bytes(memory)} at {args.context} tokens as {what} "
          f"(peak {human_bytes(p.total)}: weights {human_bytes(p.weights)}, {kv} KV cache "
          f"{human_bytes(p.kv_cache)}, working memory {human_bytes(p.working)})")
    if not result.unquantized_fits:
        print(f"optiq-chat quantize {args.model} --target-bpw {result.target_bpw:.2f}"
              + (f" --group-size {args.group_size}" if args.group_size != 64 else "")
              + (f" --kv-bits {args.kv_bits}" if args.kv_bits else ""))
    return 0
