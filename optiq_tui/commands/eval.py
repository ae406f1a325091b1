"""`optiq-chat eval MODEL...`: KL to the source (with its 95% interval), perplexity, top-1 agreement,
flips and a retrieval probe."""

from __future__ import annotations

import argparse
import json
import sys

from optiq_tui.commands._engine import add_engine_argument

HELP = ("measure models against their unquantized source on held-out text "
        "(KL with its 95% interval, perplexity, top-1, flips, retrieval)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="MODEL", help='library name, folder path, repo id, or "demo"')
    parser.add_argument(
        "--reference",
        metavar="R",
        help="the model to compare against (default: the source named by the quants' provenance)",
    )
    parser.add_argument("--text", metavar="FILE", help="evaluate on this UTF-8 text file instead of the shipped one")
    parser.add_argument("--no-retrieval", action="store_true", help="skip the long-context retrieval probe")
    parser.add_argument(
        "--no-flips", action="store_true",
        help="skip the flips check (greedy answers on the shipped prompts compared with the reference's)",
    )
    parser.add_argument("--seq-len", type=int, default=512, help="tokens per evaluated sequence (default 512)")
    parser.add_argument("--max-tokens", type=int, default=8192, help="most text tokens to evaluate (default 8192)")
    parser.add_argument(
        "--compute",
        choices=["auto", "float32", "native"],
        default="auto",
        help="arithmetic: float32 (exact dequantized weights), native dtypes, or auto (float32 on CPU)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("--markdown", metavar="OUT", help="also write the report as Markdown to OUT")
    parser.add_argument(
        "--no-card", action="store_true", help="do not add the figures to OptiQ quants' model cards"
    )
    add_engine_argument(parser)


class _Progress:
    """One updating status line on stderr when it is a terminal."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, event) -> None:
        from optiq_tui.engine.wire import event_type
        from optiq_tui.progress import Log, Progress

        if not self.tty:
            return
        if isinstance(event, Progress) and event.stage == "eval" and event.fraction is not None:
            print(f"\r\x1b[K{event.fraction:4.0%} {event.message}", end="", file=sys.stderr, flush=True)
        elif isinstance(event, Log):
            print(f"\r\x1b[K{event.message}", file=sys.stderr, flush=True)
        elif event_type(event) == "ModelEvaluated":
            print(f"\r\x1b[K{event.row.name}: done", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import os

    from optiq_tui.commands._engine import client, finish, model_arg, submit_and_follow
    from optiq_tui.eval import reports
    from optiq_tui.progress import OptiqError

    progress = _Progress()
    try:
        engine = client(args)
        job = submit_and_follow(engine, lambda: engine.eval(
            [model_arg(m) for m in args.models],
            reference=model_arg(args.reference) if args.reference else None,
            text=os.path.abspath(args.text) if args.text else None,
            seq_len=args.seq_len,
            max_tokens=args.max_tokens,
            retrieval=not args.no_retrieval,
            flips=not args.no_flips,
            compute=args.compute,
            card=not args.no_card,
            markdown=os.path.abspath(args.markdown) if args.markdown else None,
        ), progress)
    except OptiqError as exc:
        progress.done()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    progress.done()
    result, code = finish(job)
    if result is None:
        return code
    if result["reference"] is None and not args.json:
        print(
            "no reference given and none found from provenance: reported perplexity only "
            "(use --reference to get KL and top-1 agreement)",
            file=sys.stderr,
        )
    if args.json:
        print(json.dumps({**result["report"], "saved": result["saved"]}, indent=2))
    else:
        report = reports.report_from_dict(result["report"])
        print(format_table(reports.table_rows(report)))
        print()
        print(reports.settings_line(report))
        print(f"saved: {result['saved']}" + "".join(f"\nmodel card updated: {c}" for c in result["cards"]))
    return 0
