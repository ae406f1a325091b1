"""What a generation streams: reasoning text, answer text, stats, and how it ended.

Small frozen dataclasses, shared by the chat-format parsers (which produce the
text deltas) and :mod:`optiq_tui.engine.session` (which adds stats and the end).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class ReasoningDelta:
    """More of the model's reasoning (harmony ``analysis`` or a ``<think>`` block)."""

    text: str


@dataclass(frozen=True)
class AnswerDelta:
    """More of the answer the user asked for."""

    text: str


@dataclass(frozen=True)
class GenStats:
    """Live or final figures of one generation.

    ``ttft_s`` is the time from the request to the first generated token,
    prompt processing included; ``prompt_tokens`` counts only the tokens that
    were actually processed (a reused prompt cache makes it smaller).
    """

    ttft_s: float | None = None
    prompt_tokens: int = 0
    prompt_tps: float = 0.0
    gen_tokens: int = 0
    gen_tps: float = 0.0
    mlx_active_bytes: int = 0
    mlx_peak_bytes: int = 0
    rss_bytes: int = 0
    reasoning_tokens: int = 0
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class StatsUpdate:
    stats: GenStats


@dataclass(frozen=True)
class Finished:
    """The last event of a generation; ``error`` is set when ``reason`` is "error"."""

    reason: FinishReason
    stats: GenStats
    error: str | None = None


TextDelta = ReasoningDelta | AnswerDelta
