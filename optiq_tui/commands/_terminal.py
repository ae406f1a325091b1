"""Shared bits of the library commands: progress on a terminal, sizes for people."""

from __future__ import annotations

import sys
import time
from typing import Any

from optiq_tui.sizes import human_bytes, human_count


class TerminalProgress:
    """A ``progress`` callback: one updating line on stderr when it is a terminal.

    Log events are printed as lines (on stderr, so stdout stays clean for --json).
    """

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0
        self._open = False

    def __call__(self, event: Any) -> None:
        from optiq_tui.progress import Log, Progress

        if isinstance(event, Log):
            self._end_line()
            print(event.message, file=self.stream, flush=True)
        elif isinstance(event, Progress) and self.tty:
            now = time.monotonic()
            finished = event.total is not None and event.done >= event.total
            if now - self._last < 0.1 and not finished:
                return
            self._last = now
            if event.unit == "B":
                amount = human_bytes(event.done) + (f" / {human_bytes(event.total)}" if event.total else "")
            else:
                amount = f"{event.done:g}" + (f" / {event.total:g}" if event.total else "")
            pct = f" {event.fraction:4.0%}" if event.fraction is not None else ""
            print(f"\r\x1b[K{event.stage}{pct}  {amount}  {event.message}"[:200], end="", file=self.stream, flush=True)
            self._open = True

    def _end_line(self) -> None:
        if self._open:
            print("\r\x1b[K", end="", file=self.stream, flush=True)
            self._open = False

    def done(self) -> None:
        self._end_line()


def model_summary(info: Any) -> str:
    """One line about a model, for the end of pull/import/demo."""
    return (
        f"{info.name}: {info.model_type}, {human_count(info.n_params)} params, {info.quant}, "
        f"{info.bpw:.2f} bpw, {human_bytes(info.size_bytes)} at {info.path}"
    )


def run_with_progress(work, *, json_out: bool) -> tuple[Any, int]:
    """Run ``work(progress)``; (result, 0), or (None, exit code) after printing the error."""
    import json

    from optiq_tui.progress import Cancelled, OptiqError

    progress = TerminalProgress()
    try:
        return work(progress), 0
    except OptiqError as exc:
        progress.done()
        if json_out:
            print(json.dumps({"error": str(exc)}))
        print(f"error: {exc}", file=sys.stderr)
        return None, 1
    except Cancelled:
        progress.done()
        print("cancelled; nothing half-made was kept", file=sys.stderr)
        return None, 130
    finally:
        progress.done()


def add_sampler_arguments(parser: Any, *, seed_default: int | None = None) -> None:
    """The sampling flags ``run`` and ``compare`` share; unset ones come from the model."""
    parser.add_argument("--max-tokens", type=int, default=None, help="most tokens to generate")
    parser.add_argument("--temp", type=float, default=None,
                        help="sampling temperature, 0 for greedy (default: the model's recommendation)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold, in (0, 1]")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k likeliest tokens (0: off)")
    parser.add_argument("--min-p", type=float, default=None, help="drop tokens below this share of the likeliest")
    parser.add_argument("--seed", type=int, default=seed_default, help="random seed, for repeatable answers")
    parser.add_argument("--system", default=None, help="system prompt (default: the one in settings)")


def sampler_and_system(args: Any, model_dir: Any) -> tuple[Any, Any, str, str]:
    """Settings, sampler, where the sampler came from, and system prompt for ``run``/``compare``.

    Flags win, then the user's saved settings, then the model's own recommendation.
    Raises OptiqError for a bad value (a negative temperature, max tokens below 1).
    """
    from optiq_tui.engine.sampling import resolve_sampler
    from optiq_tui.settings import Settings

    settings = Settings.load()
    sampler, source = resolve_sampler(
        model_dir,
        temperature=settings.temperature if args.temp is None else args.temp,
        top_p=settings.top_p if args.top_p is None else args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        max_tokens=settings.max_tokens if args.max_tokens is None else args.max_tokens,
        seed=settings.seed if args.seed is None else args.seed,
    )
    return settings, sampler, source, settings.system_prompt if args.system is None else args.system
