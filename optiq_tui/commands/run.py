"""`optiq-chat run MODEL PROMPT`: one answer, streamed, with the generation's stats."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

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


def stats_text(stats) -> str:
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
    from optiq_tui.engine import loader
    from optiq_tui.engine.events import AnswerDelta, Finished, ReasoningDelta
    from optiq_tui.engine.session import ChatSession
    from optiq_tui.progress import OptiqError

    try:
        info = loader.as_info(args.model)
        settings, sampler, sampler_source, system = sampler_and_system(args, info.path)
        progress = _LoadProgress(info.name)
        loaded = loader.load(info, progress=progress)
        progress.done()
        session = ChatSession(loaded, system)
        effort = loaded.format.normalize_effort(args.effort or settings.effort)
        answer, reasoning, finished = [], [], None
        stream_out = not args.json
        # On a terminal the reasoning is shown dimmed before the answer; in a pipe it
        # goes to stderr so stdout carries only the answer.
        reasoning_out = sys.stdout if sys.stdout.isatty() else sys.stderr
        dim, reset = (DIM, RESET) if reasoning_out.isatty() else ("", "")
        in_reasoning = False
        for event in session.generate(args.prompt, sampler, effort):
            if isinstance(event, ReasoningDelta):
                reasoning.append(event.text)
                if stream_out:
                    if not in_reasoning:
                        in_reasoning = True
                        print(f"{dim}[reasoning] ", end="", file=reasoning_out)
                    print(event.text, end="", file=reasoning_out, flush=True)
            elif isinstance(event, AnswerDelta):
                answer.append(event.text)
                if stream_out:
                    if in_reasoning:
                        in_reasoning = False
                        print(f"{reset}\n", file=reasoning_out, flush=True)
                    print(event.text, end="", flush=True)
            elif isinstance(event, Finished):
                finished = event
    except OptiqError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    assert finished is not None
    if args.json:
        print(
            json.dumps(
                {
                    "model": info.name,
                    "format": loaded.format.kind,
                    "effort": effort,
                    "sampler": asdict(sampler),
                    "sampler_source": sampler_source,
                    "dtype_note": loaded.dtype_note,
                    "answer": "".join(answer),
                    "reasoning": "".join(reasoning),
                    "finish_reason": finished.reason,
                    "error": finished.error,
                    "stats": asdict(finished.stats),
                },
                indent=2,
            )
        )
    else:
        if in_reasoning:
            print(reset, file=reasoning_out)
        print()
        print(f"[{finished.reason}] {stats_text(finished.stats)}", file=sys.stderr)
        print(f"sampler: {sampler.describe()} ({sampler_source})", file=sys.stderr)
        if finished.error:
            print(f"error: {finished.error}", file=sys.stderr)
    return 1 if finished.reason == "error" else 0
