"""What an eval reports: its rows, settings and progress event (no MLX, so a UI can read saved reports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from optiq_tui.eval.retrieval import ProbeCase


@dataclass(frozen=True)
class ModelEval:
    """One row of the eval table. KL and top-1 are None without a reference."""

    name: str
    bpw: float
    size_bytes: int
    mean_kl: float | None
    p99_kl: float | None
    ppl: float
    top1: float | None
    retrieval: float | None  # mean probe score, None when not run
    path: str = ""
    quant: str = ""
    is_reference: bool = False
    n_tokens: int = 0
    retrieval_cases: tuple[ProbeCase, ...] = ()
    # Receipts (added later; absent in older saved reports, hence the defaults).
    kl_low: float | None = None  # 95% interval of mean_kl, bootstrap over sequences
    kl_high: float | None = None
    ppl_ratio: float | None = None  # ppl / the reference's ppl
    flips: int | None = None  # flip prompts answered differently from the reference; None: not run
    flip_prompts: int = 0
    flipped: tuple[tuple[str, str, str], ...] = ()  # (prompt, reference's answer, this answer)


@dataclass(frozen=True)
class EvalSettings:
    seq_len: int
    max_tokens: int
    text: str  # "shipped held-out text" or the user's file
    n_sequences: int
    n_tokens: int  # predicted tokens per model
    compute: str  # "float32" or "native"
    retrieval: bool
    contexts: tuple[int, ...] = ()
    hops: tuple[int, ...] = ()
    trials: int = 0
    flips: bool = False
    flip_tokens: int = 0  # greedy answer length compared for flips


@dataclass(frozen=True)
class EvalReport:
    rows: list[ModelEval]
    reference: str | None
    settings: EvalSettings
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class ModelEvaluated:
    """Progress event: one row is done (the UI can show it before the rest)."""

    row: ModelEval
