"""How far two models' answers agree: common token prefix and cross-KL.

``compare_tokens`` is pure Python over token ids. ``cross_kl`` runs two
models over the same prompt + answer and measures, along the answer, how far
the other model's next-token distributions are from the first's. When two
models cannot both be loaded, ``answer_logprobs`` lets the caller keep one
model's distributions and compare them with the other's after a swap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import mlx.core as mx

from optiq_tui.measures.metrics import kl_from_logprobs, kl_stats, log_softmax


@dataclass(frozen=True)
class Agreement:
    """Two token sequences: how many leading tokens they share, and the first that differ.

    ``first_diff`` is None when one sequence is a prefix of the other (or they
    are equal); ``token_a``/``token_b`` are the tokens at ``first_diff`` (None
    past the end of a shorter sequence).
    """

    common_prefix: int
    first_diff: int | None
    token_a: int | None
    token_b: int | None
    len_a: int
    len_b: int

    @property
    def identical(self) -> bool:
        return self.first_diff is None and self.len_a == self.len_b


def compare_tokens(a: Sequence[int], b: Sequence[int]) -> Agreement:
    """Common prefix and first differing token of two token id sequences."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    if n == len(a) == len(b):
        return Agreement(n, None, None, None, len(a), len(b))
    if n == min(len(a), len(b)):
        # One is a prefix of the other: they differ at index n, where one has ended.
        return Agreement(n, n, _at(a, n), _at(b, n), len(a), len(b))
    return Agreement(n, n, a[n], b[n], len(a), len(b))


@dataclass(frozen=True)
class CrossKL:
    """Mean (and p99) per-token KL(first || second) along an answer, in nats."""

    mean: float
    p99: float
    n: int


def answer_logprobs(model: Any, prompt_tokens: Sequence[int], answer_tokens: Sequence[int]) -> mx.array:
    """float32 next-token log-probabilities ``[len(answer), vocab]`` at each answer position.

    Row i is the model's distribution for answer token i given the prompt and
    answer tokens before it.
    """
    if not prompt_tokens:
        raise ValueError("cross-KL needs at least one prompt token to predict the answer from")
    if not answer_tokens:
        raise ValueError("cross-KL needs at least one answer token")
    tokens = list(prompt_tokens) + list(answer_tokens)[:-1]
    logits = model(mx.array(tokens)[None])[0]
    logp = log_softmax(logits[len(prompt_tokens) - 1 :])
    mx.eval(logp)
    return logp


def kl_between(first_logprobs: mx.array, second_logprobs: mx.array) -> CrossKL:
    """KL(first || second) statistics from two :func:`answer_logprobs` results."""
    if first_logprobs.shape != second_logprobs.shape:
        raise ValueError(
            f"the two models disagree on shapes {first_logprobs.shape} vs {second_logprobs.shape}; "
            "they must share a tokenizer and vocabulary"
        )
    stats = kl_stats(kl_from_logprobs(first_logprobs, second_logprobs))
    return CrossKL(stats.mean, stats.p99, stats.n)


def cross_kl(
    model_a: Any, model_b: Any, prompt_tokens: Sequence[int], answer_tokens: Sequence[int]
) -> CrossKL:
    """KL(a || b) per answer token: how surprised ``b`` is, in distribution, along ``a``'s answer.

    Pass the model that wrote the answer as ``model_a``; both models must be loaded.
    """
    return kl_between(
        answer_logprobs(model_a, prompt_tokens, answer_tokens),
        answer_logprobs(model_b, prompt_tokens, answer_tokens),
    )


def _at(seq: Sequence[int], i: int) -> int | None:
    return seq[i] if i < len(seq) else None
