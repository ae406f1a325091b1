"""`optiq-chat run MODEL PROMPT`: one answer, streamed, with the generation's stats."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from optiq_tui.commands._engine import add_engine_argument
from optiq_tui.commands._terminal import add_sampler_arguments, sampler_and_system
from optiq_tui.sizes import human_bytes

HELP = "answer one prompt with a model (reasoning separated), with speed and memory stats"

DIM, RESET = "\x1b[2m", "\x1b[0m"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help='library name, folder path, repo id, or "demo"')
    parser.add_argument("prompt", help="the user message")
    parser.add_argument(
        "--effort",
        choices=["low", "medium", "high", "on", "off"],
        help="reasoning effort: low/medium/high for gpt-oss, on/off where the template has a thinking switch",
    )
    add_sampler_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of streaming")
    add_engine_argument(parser)


def stats_text(stats) -> str:
    """The status line of a generation, from GenStats or its dict form (as jobs return it)."""
    from types import SimpleNamespace

    if isinstance(stats, dict):
        stats = SimpleNamespace(**stats)
    ttft = "-" if stats.ttft_s is None else f"{stats.ttft_s * 1000:.0f} ms"
    return (
        f"TTFT {ttft} | prompt {stats.prompt_tokens} tok {stats.prompt_tps:.1f} tok/s | "
        f"gen {stats.gen_tokens} tok {stats.gen_tps:.1f} tok/s | MLX {human_bytes(stats.mlx_active_bytes)} "
        f"(peak {human_bytes(stats.mlx_peak_bytes)}) | RSS {human_bytes(stats.rss_bytes)}"
    )


class _LoadProgress:
    """Loading progress on stderr when it is a terminal."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.tty = sys.stderr.isatty()

    def __call__(self, event) -> None:
        fraction = getattr(event, "fraction", None)
        if self.tty and fraction is not None:
            print(f"\rloading {self.name}… {fraction:4.0%}", end="", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from optiq_tui.commands._engine import client, finish, model_arg, submit_and_follow
    from optiq_tui.engine.loader import as_info
    from optiq_tui.engine.events import AnswerDelta, ReasoningDelta
    from optiq_tui.progress import OptiqError, Progress

    progress = _LoadProgress(args.model)
    stream_out = not args.json
    # On a terminal the reasoning is shown dimmed before the answer; in a pipe it
    # goes to stderr so stdout carries only the answer.
    reasoning_out = sys.stdout if sys.stdout.isatty() else sys.stderr
    dim, reset = (DIM, RESET) if reasoning_out.isatty() else ("", "")
    in_reasoning = False

    def show(event) -> None:
        nonlocal in_reasoning
        if isinstance(event, Progress):
            progress(event)
        elif isinstance(event, ReasoningDelta) and stream_out:
            if not in_reasoning:
                progress.done()
                in_reasoning = True
                print(f"{dim}[reasoning] ", end="", file=reasoning_out)
            print(event.text, end="", file=reasoning_out, flush=True)
        elif isinstance(event, AnswerDelta) and stream_out:
            progress.done()
            if in_reasoning:
                in_reasoning = False
                print(f"{reset}\n", file=reasoning_out, flush=True)
            print(event.text, end="", flush=True)

    try:
        # Flags are checked and the model's own sampler found before anything loads.
        settings, sampler, sampler_source, system = sampler_and_system(args, as_info(args.model).path)
        engine = client(args)
        job = submit_and_follow(engine, lambda: engine.chat(
            model_arg(args.model), args.prompt, system=system, sampler=asdict(sampler),
            effort=args.effort or settings.effort, save=False), show)
    except OptiqError as exc:
        progress.done()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    progress.done()
    result, code = finish(job)
    if result is None:
        return code
    if args.json:
        keys = ("model", "format", "effort", "dtype_note", "kv_bits", "answer", "reasoning", "finish_reason", "error", "stats")
        out = {k: result[k] for k in keys}
        print(json.dumps({**out, "sampler": asdict(sampler), "sampler_source": sampler_source}, indent=2))
    else:
        if in_reasoning:
            print(reset, file=reasoning_out)
        print()
        print(f"[{result['finish_reason']}] {stats_text(result['stats'])}", file=sys.stderr)
        print(f"sampler: {sampler.describe()} ({sampler_source})", file=sys.stderr)
        if result["kv_bits"]:
            print(f"KV cache: {result['kv_bits']}-bit (the quant's plan)", file=sys.stderr)
        if result["error"]:
            print(f"error: {result['error']}", file=sys.stderr)
    return 1 if result["finish_reason"] == "error" else 0
