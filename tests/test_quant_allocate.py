"""The knapsack: exact on equal-cost steps, within one step of brute force otherwise."""

from __future__ import annotations

import itertools
import random

import pytest

from optiq_tui.progress import OptiqError
from optiq_tui.quant.allocate import allocate, lower_hull
from optiq_tui.quant.config import KEEP
from optiq_tui.quant.layers import BitBudget, QuantItem


def _instance(rng: random.Random, n_items: int, equal_sizes: bool, widths):
    items, scores = [], {}
    for i in range(n_items):
        rows = 64 if equal_sizes else rng.choice([64, 128, 192, 256])
        item = QuantItem(f"l{i}", "linear", (rows, 64), 0, True)
        items.append(item)
        # Convex, falling KL in bits (quantization error shrinks ~4x per extra bit).
        scale = rng.uniform(0.01, 1.0)
        scores[item.path] = {b: (0.0 if b == KEEP else scale * 4.0 ** (-b) * rng.uniform(0.8, 1.2))
                             for b in widths}
    total = sum(i.n_params for i in items) + 64  # plus a 64-weight norm
    budget = BitBudget(total, 64 * 16, 16, 64)
    return items, scores, budget


def _brute(items, scores, budget, target, widths):
    best = None
    for combo in itertools.product(widths, repeat=len(items)):
        choice = {i.path: b for i, b in zip(items, combo)}
        if budget.bpw(items, choice) <= target + 1e-12:
            kl = sum(scores[p][b] for p, b in choice.items())
            if best is None or kl < best:
                best = kl
    return best


def test_lower_hull_drops_dominated_and_concave_points():
    pts = [(1.0, 10.0, 2), (2.0, 4.0, 3), (3.0, 3.5, 4), (4.0, 1.0, 5), (5.0, 1.0, 6)]
    hull = lower_hull(pts)
    assert [p[2] for p in hull] == [2, 3, 5]


@pytest.mark.parametrize("seed", range(12))
def test_equal_steps_match_brute_force_exactly(seed):
    rng = random.Random(seed)
    widths = (4, 8)
    items, scores, budget = _instance(rng, 6, True, widths)
    target = rng.uniform(4.6, 8.3)
    alloc = allocate(items, scores, budget, target, widths)
    assert alloc.bpw <= target + 1e-12
    assert alloc.predicted_kl == pytest.approx(_brute(items, scores, budget, target, widths), rel=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_mixed_sizes_within_one_step_of_brute_force(seed):
    rng = random.Random(100 + seed)
    widths = (3, 4, 6, 8, KEEP)
    items, scores, budget = _instance(rng, 5, False, widths)
    target = rng.uniform(4.0, 9.0)
    alloc = allocate(items, scores, budget, target, widths)
    opt = _brute(items, scores, budget, target, widths)
    assert alloc.bpw <= target + 1e-12
    assert alloc.predicted_kl >= opt - 1e-12
    largest_step = max(max(s.values()) - min(s.values()) for s in scores.values())
    assert alloc.predicted_kl - opt <= largest_step


def test_budget_below_smallest_and_above_largest_are_refused():
    items, scores, budget = _instance(random.Random(0), 4, True, (4, 8))
    with pytest.raises(OptiqError, match="below the smallest"):
        allocate(items, scores, budget, 3.0, (4, 8))
    with pytest.raises(OptiqError, match="above the largest"):
        allocate(items, scores, budget, 12.0, (4, 8))


@pytest.mark.parametrize("gain, checked", [(0.002, False), (0.10, True)])
def test_low_widths_are_checked_only_where_they_buy_a_predicted_gain(monkeypatch, gain, checked):
    """3-bit layers predicted to cut the plan's KL by under 1% are dropped without the
    held-back check (its time is spent only where the low widths matter)."""
    from types import SimpleNamespace

    from optiq_tui.quant import measure
    from optiq_tui.quant.allocate import Allocation
    from optiq_tui.quant.config import QuantConfig

    class Checked(Exception):
        pass

    def reference_pass(*_a, **_k):
        raise Checked

    safe = Allocation({"l0": 4, "l1": 4}, 4.5, 0.300)
    monkeypatch.setattr(measure, "allocate", lambda *a, **k: safe)
    monkeypatch.setattr(measure, "reference_pass", reference_pass)
    low = Allocation({"l0": 3, "l1": 5}, 4.5, 0.300 * (1 - gain))
    config = QuantConfig.from_preset("optiq-best", target_bpw=4.5)
    logs = []
    call = lambda: measure._gate_low_widths(  # noqa: E731
        low, [], {}, None, config, None, SimpleNamespace(held_back=[[1, 2, 3]]),
        logs.append, None, None)
    if checked:
        with pytest.raises(Checked):
            call()
    else:
        assert call() is safe
        assert "under 1% better" in logs[-1].message
