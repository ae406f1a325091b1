"""Quality metrics between a reference model and a model, from their logits.

Pure functions over MLX arrays; everything is computed in float32 whatever the
input dtype, because KL between close distributions is a small difference of
large numbers and float16 rounding would swamp it.

Shapes: logits are ``[..., vocab]`` (any leading shape, e.g. ``[tokens, vocab]``
or ``[batch, tokens, vocab]``); per-token results have the leading shape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import mlx.core as mx


def log_softmax(logits: mx.array) -> mx.array:
    """Log-probabilities in float32, stable for large logits (``x - logsumexp(x)``)."""
    x = logits.astype(mx.float32)
    return x - mx.logsumexp(x, axis=-1, keepdims=True)


def kl_from_logprobs(ref_logprobs: mx.array, logprobs: mx.array) -> mx.array:
    """Per-token KL(ref || model) from two float32 log-probability arrays."""
    ref = ref_logprobs.astype(mx.float32)
    kl = mx.sum(mx.exp(ref) * (ref - logprobs.astype(mx.float32)), axis=-1)
    # Exact KL is >= 0; rounding can leave -1e-9 on identical distributions.
    return mx.maximum(kl, 0.0)


def token_kl(ref_logits: mx.array, logits: mx.array) -> mx.array:
    """Per-token KL(ref || model) in nats from two logits arrays of the same shape."""
    _check_same_shape(ref_logits, logits)
    return kl_from_logprobs(log_softmax(ref_logits), log_softmax(logits))


def top1_matches(ref_logits: mx.array, logits: mx.array) -> mx.array:
    """Per-token bool: does the model's most likely token equal the reference's?"""
    _check_same_shape(ref_logits, logits)
    return mx.argmax(ref_logits, axis=-1) == mx.argmax(logits, axis=-1)


def token_nll(logits: mx.array, targets: mx.array) -> mx.array:
    """Per-token negative log-likelihood (nats) of ``targets`` (shape = logits' leading shape)."""
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"targets shape {targets.shape} does not match logits {logits.shape[:-1]}")
    logp = log_softmax(logits)
    picked = mx.take_along_axis(logp, targets.astype(mx.int32)[..., None], axis=-1)
    return -picked[..., 0]


@dataclass(frozen=True)
class KLStats:
    """Summary of per-token KL(ref || model), in nats."""

    mean: float
    p99: float
    max: float
    n: int


@dataclass(frozen=True)
class Top1:
    """How often the model's top token equals the reference's."""

    agree: int
    n: int

    @property
    def rate(self) -> float:
        return self.agree / self.n if self.n else float("nan")


@dataclass(frozen=True)
class Perplexity:
    """Mean next-token NLL (nats) over ``n`` tokens and its perplexity ``exp(nll)``."""

    nll: float
    n: int

    @property
    def ppl(self) -> float:
        return math.exp(self.nll) if self.n else float("nan")


def percentile(values: mx.array, q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation (numpy's default method)."""
    flat = mx.sort(values.astype(mx.float32).reshape(-1))
    n = flat.size
    if n == 0:
        return float("nan")
    pos = (q / 100.0) * (n - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    a, b = flat[lo].item(), flat[hi].item()
    return a + (b - a) * (pos - lo)


def kl_stats(kl: mx.array | Iterable[mx.array]) -> KLStats:
    """Mean, 99th percentile and max of per-token KL values (one array or several)."""
    arr = _flat_concat(kl)
    if arr.size == 0:
        return KLStats(float("nan"), float("nan"), float("nan"), 0)
    return KLStats(
        mean=mx.mean(arr).item(),
        p99=percentile(arr, 99.0),
        max=mx.max(arr).item(),
        n=arr.size,
    )


@dataclass(frozen=True)
class KLInterval:
    """Mean per-token KL with a 95% confidence interval from a bootstrap over sequences."""

    mean: float
    low: float
    high: float
    sequences: int
    method: str = "bootstrap over sequences (token-weighted mean, 2000 resamples, percentile 95%)"


BOOTSTRAP_RESAMPLES = 2000


def kl_interval(per_sequence: Iterable[mx.array], seed: int = 0) -> KLInterval:
    """Mean KL over all tokens and its 95% interval, resampling whole sequences.

    Tokens of one sequence are correlated (one hard passage raises many of
    them), so sequences, not tokens, are the independent draws; each resample
    weighs a sequence by its token count, like the mean itself.
    """
    import numpy as np

    sums, counts = [], []
    for kl in per_sequence:
        flat = kl.astype(mx.float32).reshape(-1)
        if flat.size:
            sums.append(mx.sum(flat).item())
            counts.append(flat.size)
    if not counts:
        return KLInterval(float("nan"), float("nan"), float("nan"), 0)
    s, c = np.array(sums), np.array(counts, dtype=np.float64)
    mean = float(s.sum() / c.sum())
    if len(c) == 1:
        return KLInterval(mean, float("nan"), float("nan"), 1)
    pick = np.random.default_rng(seed).integers(0, len(c), size=(BOOTSTRAP_RESAMPLES, len(c)))
    means = s[pick].sum(axis=1) / c[pick].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return KLInterval(mean, float(low), float(high), len(c))


def top1_agreement(ref_logits: mx.array, logits: mx.array) -> Top1:
    """Top-1 agreement between two logits arrays of the same shape."""
    matches = top1_matches(ref_logits, logits)
    return Top1(agree=int(mx.sum(matches).item()), n=matches.size)


def top1_from_matches(matches: mx.array | Iterable[mx.array]) -> Top1:
    """Combine per-token match arrays (e.g. one per sequence) into one :class:`Top1`."""
    arr = _flat_concat(matches)
    return Top1(agree=int(mx.sum(arr).item()), n=arr.size)


def perplexity(logits: mx.array, targets: mx.array) -> Perplexity:
    """Perplexity of ``targets`` under ``logits`` (targets[i] is the token after position i)."""
    return perplexity_from_nll(token_nll(logits, targets))


def perplexity_from_nll(nll: mx.array | Iterable[mx.array]) -> Perplexity:
    """Combine per-token NLL arrays (e.g. one per sequence) into one :class:`Perplexity`."""
    arr = _flat_concat(nll)
    if arr.size == 0:
        return Perplexity(float("nan"), 0)
    return Perplexity(nll=mx.mean(arr).item(), n=arr.size)


@dataclass(frozen=True)
class LogitComparison:
    """Everything one comparison of a model's logits against a reference's gives."""

    kl: KLStats
    top1: Top1
    ppl: Perplexity | None  # of the model, when next tokens were given


def compare_logits(
    ref_logits: mx.array, logits: mx.array, targets: mx.array | None = None
) -> LogitComparison:
    """KL, top-1 agreement and (with ``targets``) the model's perplexity, in one call."""
    return LogitComparison(
        kl=kl_stats(token_kl(ref_logits, logits)),
        top1=top1_agreement(ref_logits, logits),
        ppl=perplexity(logits, targets) if targets is not None else None,
    )


def _check_same_shape(a: mx.array, b: mx.array) -> None:
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"logits shapes differ: {a.shape} vs {b.shape}")


def _flat_concat(values: mx.array | Iterable[mx.array]) -> mx.array:
    if isinstance(values, mx.array):
        return values.reshape(-1)
    parts = [v.reshape(-1) for v in values]
    return mx.concatenate(parts) if parts else mx.array([], dtype=mx.float32)
