"""`optiq-chat quantize MODEL`: an OptiQ mixed-precision (or uniform) quant into the library."""

from __future__ import annotations

import argparse
import json
import sys

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
                        "optiq-plus: optiq-best with error-compensated rounding")
    parser.add_argument("--calibration", default=None, help="a text file to calibrate on instead of the shipped mix")
    parser.add_argument("--name", default=None, help="name of the new model in the library")
    parser.add_argument("--uniform", type=int, default=None, metavar="B",
                        help="write a plain uniform B-bit mlx-lm quant instead (the baseline)")
    parser.add_argument("--dequantize", action="store_true",
                        help="accept an already-quantized source by dequantizing it first")
    parser.add_argument("--no-verify", action="store_true", help="skip the held-out quality check")
    parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")


def _config(args: argparse.Namespace):
    from pathlib import Path

    from optiq_tui.quant.config import QuantConfig

    overrides = {}
    if args.target_bpw is not None:
        overrides["target_bpw"] = args.target_bpw
    if args.bits is not None:
        overrides["bits"] = args.bits
    if args.group_size is not None:
        overrides["group_size"] = args.group_size
    return QuantConfig.from_preset(
        args.preset,
        calibration=Path(args.calibration) if args.calibration else None,
        name=args.name,
        uniform_bits=args.uniform,
        dequantize=args.dequantize,
        verify=not args.no_verify,
        **overrides,
    )


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
    from optiq_tui.commands._terminal import run_with_progress

    def work(terminal):
        from optiq_tui.library.catalog import resolve
        from optiq_tui.quant.pipeline import quantize

        config = _config(args).validate()
        source = resolve(args.model)
        return quantize(source, config, progress=_stage_lines(terminal))

    result, code = run_with_progress(work, json_out=args.json)
    if result is None:
        return code
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        hist = " ".join(f"{'keep' if b == 16 else b}:{n}" for b, n in result.bit_histogram.items())
        print(f"{result.name}: {result.achieved_bpw:.3f} bpw ({hist}) at {result.path}")
        q = result.quality
        if q:
            for key, label in (("quant", "this quant"), ("uniform4", "uniform 4-bit")):
                r = q[key]
                print(f"  {label:>13}: {r['bpw']:.3f} bpw  KL {r['mean_kl']:.4f}  p99 {r['p99_kl']:.3f}  "
                      f"top-1 {100 * r['top1']:.1f}%  ppl {r['ppl']:.2f}  (source ppl {q['source_ppl']:.2f})")
    return 0
