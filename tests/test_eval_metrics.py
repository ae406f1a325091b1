"""KL, top-1 agreement and perplexity against hand-made logits with known answers."""

from __future__ import annotations

import math

import mlx.core as mx
import numpy as np
import pytest

from optiq_tui.measures import metrics as m


def test_identical_logits_give_zero_kl_and_full_agreement():
    logits = mx.random.normal((7, 50), key=mx.random.key(1)) * 5
    assert m.kl_stats(m.token_kl(logits, logits)) == m.KLStats(0.0, 0.0, 0.0, 7)
    assert m.top1_agreement(logits, logits) == m.Top1(7, 7)


def test_two_token_distributions_match_closed_form():
    # ref p = (1/2, 1/2); model q = (3/4, 1/4): KL(p||q) = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3).
    ref = mx.array([[0.0, 0.0]])
    model = mx.array([[math.log(3.0), 0.0]])
    assert m.token_kl(ref, model).item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    # The other direction: KL(q||p) = 3/4 ln(3/2) + 1/4 ln(1/2).
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert m.token_kl(model, ref).item() == pytest.approx(expected, rel=1e-6)


def test_kl_is_stable_for_huge_logits_and_low_precision_inputs():
    ref = mx.array([[1000.0, 1000.0]], dtype=mx.float16)
    model = mx.array([[1000.0 + math.log(3.0), 1000.0]])
    value = m.token_kl(ref, model).item()
    assert math.isfinite(value)
    assert value == pytest.approx(0.5 * math.log(4 / 3), abs=2e-3)  # float16 input rounding


def test_top1_agreement_counts_matching_argmax():
    ref = mx.array([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0], [0.0, 0.0, 5.0]])
    model = mx.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]])
    top1 = m.top1_agreement(ref, model)
    assert (top1.agree, top1.n) == (2, 3)
    assert top1.rate == pytest.approx(2 / 3)


def test_perplexity_of_uniform_logits_is_vocab_size():
    logits = mx.zeros((4, 10))
    targets = mx.array([0, 3, 9, 5])
    assert m.perplexity(logits, targets).ppl == pytest.approx(10.0, rel=1e-6)


def test_nll_picks_the_target_token():
    logits = mx.array([[math.log(0.2), math.log(0.8)], [math.log(0.2), math.log(0.8)]])
    nll = m.token_nll(logits, mx.array([1, 0]))
    assert nll.tolist() == pytest.approx([-math.log(0.8), -math.log(0.2)], rel=1e-6)
    ppl = m.perplexity_from_nll([nll[:1], nll[1:]])
    assert ppl.n == 2
    assert ppl.ppl == pytest.approx(math.exp((-math.log(0.8) - math.log(0.2)) / 2), rel=1e-6)


def test_percentile_matches_numpy_linear():
    values = np.random.default_rng(3).random(1001).astype(np.float32)
    assert m.percentile(mx.array(values), 99) == pytest.approx(float(np.percentile(values, 99)), rel=1e-6)
    assert m.kl_stats([mx.array([0.0, 1.0]), mx.array([2.0, 3.0])]).mean == pytest.approx(1.5)


def test_compare_logits_bundles_everything_and_rejects_shape_mismatch():
    ref = mx.array([[0.0, 0.0]])
    model = mx.array([[math.log(3.0), 0.0]])
    result = m.compare_logits(ref, model, mx.array([0]))
    assert result.kl.mean == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    assert result.top1.n == 1
    assert result.ppl.ppl == pytest.approx(4 / 3, rel=1e-6)
    with pytest.raises(ValueError, match="shapes differ"):
        m.token_kl(mx.zeros((2, 3)), mx.zeros((2, 4)))
