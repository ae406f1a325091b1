"""The receipts line a model card or an eval report carries, and how its figures are written."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # metrics imports MLX; a UI reading reports must not
    from optiq_tui.measures.flips import Flips
    from optiq_tui.measures.metrics import KLInterval


def figure(value: float | None, digits: int) -> str:
    """``value`` to ``digits`` places, or a dash when it is missing or NaN."""
    return "—" if value is None or value != value else f"{value:.{digits}f}"


def receipts_line(name: str, interval: KLInterval, flips: Flips | None = None) -> str:
    """One line a model card can carry: mean KL with its 95% interval (and how it was
    computed), and the flips on the shipped greedy prompts."""
    line = (f"{name}: mean KL {interval.mean:.4f} nats/token, 95% CI "
            f"[{figure(interval.low, 4)}, {figure(interval.high, 4)}] ({interval.method}, "
            f"{interval.sequences} sequences)")
    if flips is not None:
        line += (f"; flips: {len(flips.changed)} of {len(flips.prompts)} greedy prompts "
                 f"({100 * flips.rate:.0f}%) change between right and wrong against the source")
    return line + "."


def refine_line(refine: dict) -> str:
    """The refinement's gain (quant/refine.py's record) in one line: CLI, TUI summary, card."""
    gain = "" if refine.get("gain") is None else f" ({refine['gain']:.2f}x)"
    return (f"held-back calibration KL {refine['kl_before']:.4f} → {refine['kl_after']:.4f}{gain} "
            f"after {refine['steps']} steps in {refine['seconds']:.0f} s (kept step {refine['best_step']})")
