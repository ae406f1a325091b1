"""`optiq-chat compare A B "prompt"`: both models answer the same prompt, same sampler and seed."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from optiq_tui.commands._engine import add_engine_argument
from optiq_tui.commands._terminal import add_sampler_arguments, sampler_and_system

HELP = "answer one prompt with two models (same sampler and seed) and show where the answers differ"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_a", metavar="A", help='library name, folder path, repo id, or "demo"')
    parser.add_argument("model_b", metavar="B", help="the other model")
    parser.add_argument("prompt", help="the user message")
    add_sampler_arguments(parser, seed_default=0)  # one seed shared by both sides
    parser.add_argument(
        "--effort", choices=["low", "medium", "high", "on", "off"], help="reasoning effort, where a model has one"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    add_engine_argument(parser)


def _printer(quiet: bool):
    """Stream each side's answer to stdout under a header; loading and notes on stderr."""
    from optiq_tui.engine.events import AnswerDelta, Finished
    from optiq_tui.engine.wire import event_type
    from optiq_tui.progress import Log

    current = {"side": None}

    def progress(event) -> None:
        if isinstance(event, Log):
            print(event.message, file=sys.stderr)
            return
        if event_type(event) != "SideEvent" or quiet:
            return
        inner = event.event
        if isinstance(inner, AnswerDelta):
            if current["side"] != event.side:
                current["side"] = event.side
                print(f"\n=== {event.side.upper()} ===", flush=True)
            print(inner.text, end="", flush=True)
        elif isinstance(inner, Finished):
            from optiq_tui.commands.run import stats_text

            print(f"\n[{event.side.upper()}: {inner.reason}] {stats_text(inner.stats)}", file=sys.stderr)
        elif isinstance(inner, Log):
            print(inner.message, file=sys.stderr)

    return lambda _terminal: progress


def run(args: argparse.Namespace) -> int:
    from optiq_tui.commands._engine import model_arg, run_job
    from optiq_tui.engine.loader import as_info
    from optiq_tui.progress import OptiqError

    try:
        # Both sides share one sampler: A's recommendation (they are usually quants of one base).
        settings, sampler, sampler_source, system = sampler_and_system(args, as_info(args.model_a).path)
    except OptiqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result, code = run_job(
        args,
        lambda engine: engine.compare(model_arg(args.model_a), model_arg(args.model_b), args.prompt,
                                      system=system, sampler=asdict(sampler),
                                      effort=args.effort or settings.effort),
        progress=_printer(quiet=args.json),
    )
    if result is None:
        return code
    if args.json:
        out = {**result, "sampler": asdict(sampler), "sampler_source": sampler_source, "system_prompt": system}
        print(json.dumps(out, indent=2))
        return 0
    print()
    agreement = result["agreement"]
    if agreement is not None:
        if agreement["identical"]:
            print(f"the answers are identical ({agreement['len_a']} tokens)")
        else:
            path = result["a"]["path"]
            print(
                f"same first {agreement['common_prefix']} tokens; first difference at token "
                f"{agreement['first_diff']}: A {_token(path, agreement['token_a'])} "
                f"vs B {_token(path, agreement['token_b'])}"
            )
    for label, key in (("A's answer under B", "kl_a_under_b"), ("B's answer under A", "kl_b_under_a")):
        kl = result[key]
        if kl is not None:
            print(f"KL of {label}: {kl['mean']:.4f} nats/token (p99 {kl['p99']:.4f}, {kl['n']} tokens)")
    return 0


def _token(path: str, token_id: int | None) -> str:
    if token_id is None:
        return "(end)"
    from mlx_lm.utils import load_tokenizer

    return repr(load_tokenizer(path).decode([token_id]))
