"""Receipts: mean KL with a 95% interval over sequences, and greedy-answer flips."""

from __future__ import annotations

import math

import mlx.core as mx
import mlx.nn as nn
import pytest

from optiq_tui.measures.flips import count_flips, flip_prompts, normalize
from optiq_tui.measures.metrics import kl_interval
from optiq_tui.measures.receipts import receipts_line


def test_interval_brackets_the_token_weighted_mean_and_is_deterministic():
    seqs = [mx.array([0.1, 0.2, 0.3]), mx.array([0.5] * 5), mx.array([0.05, 0.15])]
    ci = kl_interval(seqs)
    assert ci.mean == pytest.approx((0.6 + 2.5 + 0.2) / 10)
    assert ci.low <= ci.mean <= ci.high and ci.sequences == 3
    assert kl_interval(seqs) == ci
    assert "bootstrap over sequences" in ci.method


def test_interval_narrows_when_sequences_agree():
    mx.random.seed(0)
    noisy = [mx.random.uniform(shape=(50,)) * (1 + 4 * (i % 2)) for i in range(12)]
    steady = [mx.random.uniform(shape=(50,)) for _ in range(12)]
    a, b = kl_interval(noisy), kl_interval(steady)
    assert (b.high - b.low) < (a.high - a.low)


def test_one_sequence_has_no_interval():
    ci = kl_interval([mx.array([0.2, 0.4])])
    assert ci.mean == pytest.approx(0.3) and math.isnan(ci.low) and math.isnan(ci.high)
    assert "CI [—, —]" in receipts_line("m", ci)


def test_shipped_prompts():
    prompts = flip_prompts()
    assert len(prompts) == 20 and len(set(prompts)) == 20
    assert normalize("  Paris.\n") == normalize("paris")


class _Insists(nn.Module):
    """A model that always answers one token: the same network with that token's logit raised."""

    def __init__(self, inner: nn.Module, token: int) -> None:
        super().__init__()
        self.inner = inner
        self.bias = 1e4 * (mx.arange(inner.model.embed_tokens.weight.shape[0]) == token)

    @property
    def layers(self):
        return self.inner.layers

    def __call__(self, inputs, cache=None, **kw):
        return self.inner(inputs, cache=cache, **kw) + self.bias


@pytest.fixture(scope="module")
def pair(tiny_llama_dir):
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(tiny_llama_dir))
    token = tokenizer.encode("Paris")[-1]
    return (model, tokenizer), (_Insists(model, token), tokenizer)


def test_a_model_never_flips_against_itself(pair):
    source, _ = pair
    flips = count_flips(source, source, flip_prompts()[:3], max_tokens=6)
    assert flips.changed == () and flips.rate == 0.0
    assert flips.answers == flips.source_answers


def test_a_different_model_flips(pair):
    source, other = pair
    flips = count_flips(source, other, flip_prompts()[:3], max_tokens=6)
    assert flips.changed and flips.rate == len(flips.changed) / 3
    line = receipts_line("other", kl_interval([mx.array([0.1, 0.3]), mx.array([0.2])]), flips)
    assert f"flips: {len(flips.changed)} of 3 greedy prompts" in line
