"""Choosing a width per layer under a bits-per-weight budget.

Per layer, only the lower convex hull of (cost, predicted KL) over its widths
can be the answer of the continuous relaxation; taking hull steps greedily by
KL saved per bit is optimal for that relaxation, and the discrete answer is
within one step of it. A fix-up pass then spends what is left on any single
change that still fits (quant notes: this matched an exact dynamic programme).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from optiq_tui.progress import OptiqError
from optiq_tui.quant.layers import BitBudget, QuantItem


@dataclass(frozen=True)
class Allocation:
    """path -> bits for every quantizable item; its exact bpw and predicted KL."""

    choice: dict[str, int]
    bpw: float
    predicted_kl: float


def lower_hull(points: list[tuple[float, float, int]]) -> list[tuple[float, float, int]]:
    """(cost, kl, bits) points on the lower-left convex hull, cheapest first, KL falling."""
    pts = sorted(points)
    hull: list[tuple[float, float, int]] = []
    for p in pts:
        if hull and p[1] >= hull[-1][1]:
            continue  # costs more, saves nothing
        while len(hull) >= 2:
            (c1, k1, _), (c2, k2, _) = hull[-2], hull[-1]
            # Drop hull[-1] when it lies on or above the segment hull[-2] -> p.
            if (k2 - k1) * (p[0] - c1) >= (p[1] - k1) * (c2 - c1):
                hull.pop()
            else:
                break
        hull.append(p)
    return hull


def allocate(
    items: list[QuantItem],
    scores: dict[str, dict[int, float]],
    budget: BitBudget,
    target_bpw: float,
    widths: tuple[int, ...],
) -> Allocation:
    """Minimize the summed predicted KL subject to bpw <= ``target_bpw``."""
    active = [i for i in items if i.quantizable]
    options: dict[str, list[tuple[float, float, int]]] = {}
    for item in active:
        pts = [(budget.item_cost(item, b), scores[item.path][b], b) for b in widths
               if b in scores[item.path]]
        options[item.path] = sorted(pts)
    limit = target_bpw * budget.total_params
    floor = budget.fixed_bits + sum(o[0][0] for o in options.values())
    ceiling = budget.fixed_bits + sum(o[-1][0] for o in options.values())
    if floor > limit + 1e-6:
        raise OptiqError(
            f"a budget of {target_bpw:g} bits per weight is below the smallest this model can be "
            f"with widths {_fmt(widths)}: {floor / budget.total_params:.3f}; "
            "raise --target-bpw or add a lower width to --bits"
        )
    if ceiling < limit - 1e-6 and ceiling / budget.total_params < target_bpw - 0.05:
        raise OptiqError(
            f"a budget of {target_bpw:g} bits per weight is above the largest this model can be "
            f"with widths {_fmt(widths)}: {ceiling / budget.total_params:.3f}; "
            "lower --target-bpw or add a higher width to --bits"
        )
    hulls = {p: lower_hull(o) for p, o in options.items()}
    pos = {p: 0 for p in hulls}
    used = budget.fixed_bits + sum(h[0][0] for h in hulls.values())
    heap: list[tuple[float, str]] = []

    def push(path: str) -> None:
        h, i = hulls[path], pos[path]
        if i + 1 < len(h):
            dc, dk = h[i + 1][0] - h[i][0], h[i][1] - h[i + 1][1]
            heapq.heappush(heap, (-dk / dc, path))

    for path in hulls:
        push(path)
    while heap:
        _, path = heapq.heappop(heap)
        h, i = hulls[path], pos[path]
        step = h[i + 1][0] - h[i][0]
        if used + step <= limit:
            used += step
            pos[path] = i + 1
            push(path)
    choice = {p: hulls[p][pos[p]][2] for p in hulls}
    current = {p: (hulls[p][pos[p]][0], hulls[p][pos[p]][1]) for p in hulls}
    # Fix-up: spend the remainder on the best single change that fits (any width, hull or not).
    while True:
        best = None
        for path, opts in options.items():
            c0, k0 = current[path]
            for cost, kl, bits in opts:
                if kl < k0 - 1e-15 and used - c0 + cost <= limit:
                    gain = k0 - kl
                    if best is None or gain > best[0]:
                        best = (gain, path, cost, kl, bits)
        if best is None:
            break
        _, path, cost, kl, bits = best
        used += cost - current[path][0]
        current[path] = (cost, kl)
        choice[path] = bits
    total_kl = sum(k for _, k in current.values())
    return Allocation(choice, used / budget.total_params, total_kl)


def _fmt(widths: tuple[int, ...]) -> str:
    return ",".join("keep" if b == 16 else str(b) for b in widths)
