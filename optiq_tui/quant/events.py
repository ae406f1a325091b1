"""Progress events of a quantize run (besides the shared Progress and Log)."""

from __future__ import annotations

from dataclasses import dataclass, field

STAGES = ("load", "calibrate", "measure", "allocate", "quantize", "refine", "write", "verify")


@dataclass(frozen=True)
class StageChanged:
    """``stage`` entered ``state`` ("running" | "done" | "skipped" | "failed"); seconds spent so far."""

    stage: str
    state: str
    seconds: float = 0.0


@dataclass(frozen=True)
class LayerScore:
    """Estimated KL (nats/token) of one layer at each candidate width; chosen width once allocated."""

    layer: str
    kl_by_bits: dict[int, float] = field(default_factory=dict)
    chosen_bits: int | None = None
