"""`optiq-chat quantize MODEL`: an OptiQ mixed-precision (or uniform) quant into the library."""

from __future__ import annotations

import argparse
import json
import sys

from optiq_tui.commands._engine import add_engine_argument

HELP = "quantize a model with OptiQ mixed precision (or uniformly with --uniform B) into the library"


def _bits(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits takes widths like 4,8, not {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help='library name, folder path, repo id, or "demo"')
    parser.add_argument("--target-bpw", type=float, default=None,
                        help="bits per weight budget, counted as mlx-lm counts them (default: the preset's, 5.0)")
    parser.add_argument("--bits", type=_bits, default=None,
                        help="candidate widths, e.g. 4,8 or 3,4,5,6,8 (16 = keep unquantized)")
    parser.add_argument("--group-size", type=int, default=None, help="quantization group size (32, 64, 128)")
    parser.add_argument("--preset", default="optiq-4/8", choices=["optiq-4/8", "optiq-best", "optiq-plus"],
                        help="optiq-4/8 (default): 4 or 8 bits; optiq-best: 3-8 bits and unquantized, gated on p99 KL; "
                        "optiq-plus: 3-8 bits at group 64 or 128 per layer, each layer and the head "
                        "quantized with error compensation (GPTQ-style) instead of rounding to nearest")
    parser.add_argument("--calibration", default=None, help="a text file to calibrate on instead of the shipped mix")
    parser.add_argument("--self-answers", action="store_true",
                        help="add the source's own answers to the shipped chat prompts to the "
                        "calibration (generated once per source and cached)")
    parser.add_argument("--calibration-from-conversations", nargs="?", const="all", default=None,
                        metavar="IDS", help="mix your saved conversations (all, or comma-separated ids "
                        "from `optiq-chat conversations list`) into the calibration; they are only read")
    parser.add_argument("--name", default=None, help="name of the new model in the library")
    parser.add_argument("--uniform", type=int, default=None, metavar="B",
                        help="write a plain uniform B-bit mlx-lm quant instead (the baseline)")
    parser.add_argument("--dequantize", action="store_true",
                        help="accept an already-quantized source by dequantizing it first")
    parser.add_argument("--kv-bits", type=int, default=None, metavar="B",
                        help="record that this quant is planned with a B-bit KV cache (optiq-chat plan "
                        "--kv-bits); chat and serve then quantize its KV cache to B bits")
    parser.add_argument("--refine", type=float, default=None, metavar="MINUTES",
                        help="then tune the quant's scales and biases against the source's logits "
                        "for up to MINUTES (DWQ-style; kept only where held-back KL improves)")
    parser.add_argument("--refine-steps", type=int, default=None, metavar="N",
                        help="refine for at most N steps (with --refine: whichever comes first)")
    parser.add_argument("--no-verify", action="store_true", help="skip the held-out quality check")
    parser.add_argument("--verify-flips", action="store_true",
                        help="also count flips (greedy answers on the shipped prompts that change "
                        "against the source) in the card; slower")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_engine_argument(parser)


def _options(args: argparse.Namespace) -> dict:
    """The quantize config as JSON-able job arguments (paths made absolute for the engine)."""
    import os

    options = {"preset": args.preset, "name": args.name, "uniform_bits": args.uniform,
               "dequantize": args.dequantize, "verify": not args.no_verify,
               "verify_flips": args.verify_flips}
    if args.calibration:
        options["calibration"] = os.path.abspath(args.calibration)
    if args.target_bpw is not None:
        options["target_bpw"] = args.target_bpw
    if args.bits is not None:
        options["bits"] = list(args.bits)
    if args.group_size is not None:
        options["group_size"] = args.group_size
    if args.self_answers:
        options["self_answers"] = True
    if args.calibration_from_conversations:
        options["conversations"] = [c.strip() for c in args.calibration_from_conversations.split(",") if c.strip()]
    if args.kv_bits is not None:
        options["kv_bits"] = args.kv_bits
    if args.refine is not None:
        options["refine_minutes"] = args.refine
    if args.refine_steps is not None:
        options["refine_steps"] = args.refine_steps
    return options


def _validate(options: dict) -> None:
    """Bad flags fail here, before any engine is started (the engine reads them the same way)."""
    from optiq_tui.quant.config import QuantConfig

    QuantConfig.from_args(options).validate()


def _stage_lines(inner):
    """Stage changes as log lines on stderr; everything else to the terminal progress."""
    from optiq_tui.quant.events import LayerScore, StageChanged

    def progress(event) -> None:
        if isinstance(event, StageChanged):
            if event.state in ("done", "skipped"):
                took = f" ({event.seconds:.1f} s)" if event.state == "done" else ""
                inner.done()
                print(f"{event.stage}: {event.state}{took}", file=sys.stderr, flush=True)
        elif not isinstance(event, LayerScore):
            inner(event)

    return progress


def run(args: argparse.Namespace) -> int:
    from optiq_tui.commands._engine import model_arg, run_job
    from optiq_tui.progress import OptiqError

    options = _options(args)
    try:
        _validate(options)
    except OptiqError as exc:
        if args.json:
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result, code = run_job(args, lambda engine: engine.quantize(model_arg(args.model), **options),
                           json_out=args.json, progress=_stage_lines)
    if result is None:
        return code
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        hist = " ".join(f"{'keep' if b == '16' else b}:{n}" for b, n in result["bit_histogram"].items())
        print(f"{result['name']}: {result['achieved_bpw']:.3f} bpw ({hist}) at {result['path']}")
        q = result["quality"]
        if q:
            for key, label in (("quant", "this quant"), ("uniform4", "uniform 4-bit")):
                r = q[key]
                print(f"  {label:>13}: {r['bpw']:.3f} bpw  KL {r['mean_kl']:.4f}  p99 {r['p99_kl']:.3f}  "
                      f"top-1 {100 * r['top1']:.1f}%  ppl {r['ppl']:.2f}  (source ppl {q['source_ppl']:.2f})")
        if result.get("refine"):
            from optiq_tui.measures.receipts import refine_line

            print(f"  {'refinement':>13}: {refine_line(result['refine'])}")
    return 0
