"""`optiq-chat plan MODEL --memory 16GB --context 32768`: the bits per weight that fit."""

from __future__ import annotations

import argparse
import json

from optiq_tui.commands._engine import add_engine_argument

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
    add_engine_argument(parser)


def run(args: argparse.Namespace) -> int:
    from optiq_tui.commands._engine import model_arg, run_job
    from optiq_tui.sizes import human_bytes

    # The engine's plan job (the quantize form asks the same one); a quick job, so a running
    # engine answers it and none is started for it.
    result, code = run_job(args, lambda engine: engine.plan(
        model_arg(args.model), args.memory, args.context, kv_bits=args.kv_bits, group_size=args.group_size),
        json_out=args.json, start_engine=False)
    if result is None:
        return code
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    p = result["peak"]
    kv = f"{args.kv_bits}-bit" if args.kv_bits else "unquantized"
    what = "unquantized" if result["unquantized_fits"] else f"a {result['target_bpw']:.2f} bpw quant"
    print(f"{result['model']} fits in {human_bytes(result['memory'])} at {args.context} tokens as {what} "
          f"(peak {human_bytes(p['total'])}: weights {human_bytes(p['weights'])}, {kv} KV cache "
          f"{human_bytes(p['kv_cache'])}, working memory {human_bytes(p['working'])})")
    if not result["unquantized_fits"]:
        print(f"optiq-chat quantize {args.model} --target-bpw {result['target_bpw']:.2f}"
              + (f" --group-size {args.group_size}" if args.group_size != 64 else "")
              + (f" --kv-bits {args.kv_bits}" if args.kv_bits else ""))
    return 0
