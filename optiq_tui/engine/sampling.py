"""Sampler settings and where their defaults come from: the model first, then a safe default.

A fixed temperature of 0.7 made the 135M demo answer "What is the capital of France?"
with French gibberish in 4 of 7 tries; small models need the sampler their authors
ship (``generation_config.json``, or a GGUF's ``general.sampling.*`` keys, which the
import writes into that same file).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optiq_tui.library.model_files import GENERATION_CONFIG, read_json
from optiq_tui.progress import OptiqError

# For a folder that says nothing: cooler than the 0.7-1.0 chat apps use, plus min-p,
# which cuts the long tail where small models turn to gibberish.
DEFAULT_TEMPERATURE = 0.6
DEFAULT_TOP_P = 0.95
DEFAULT_MIN_P = 0.05


@dataclass(frozen=True)
class SamplerSettings:
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    top_k: int = 0  # 0: off
    min_p: float = 0.0
    max_tokens: int = 1024
    seed: int | None = None

    def __post_init__(self) -> None:
        problem = _problem(self)
        if problem:
            raise OptiqError(problem)

    def describe(self) -> str:
        """'temp 0.2 · top-p 0.9 · max 1024' (what a status line shows)."""
        if self.temperature == 0:
            parts = ["greedy"]
        else:
            parts = [f"temp {self.temperature:g}"]
            if self.top_p < 1:
                parts.append(f"top-p {self.top_p:g}")
            if self.top_k:
                parts.append(f"top-k {self.top_k}")
            if self.min_p:
                parts.append(f"min-p {self.min_p:g}")
        parts.append(f"max {self.max_tokens}")
        if self.seed is not None:
            parts.append(f"seed {self.seed}")
        return " · ".join(parts)


def _problem(s: SamplerSettings) -> str | None:
    if not s.temperature >= 0:
        return f"temperature must be 0 (greedy) or more, not {s.temperature:g}"
    if not 0 < s.top_p <= 1:
        return f"top-p must be above 0 and at most 1, not {s.top_p:g}"
    if s.top_k < 0:
        return f"top-k must be 0 (off) or more, not {s.top_k}"
    if not 0 <= s.min_p < 1:
        return f"min-p must be at least 0 and below 1, not {s.min_p:g}"
    if s.max_tokens < 1:
        return f"max tokens must be 1 or more, not {s.max_tokens}"
    return None


@dataclass(frozen=True)
class ModelSampler:
    """A model's default sampler and where it came from (shown to the user)."""

    settings: SamplerSettings
    source: str  # "generation_config.json" | "app default"


def model_sampler(model_dir: Path | str | None) -> ModelSampler:
    """The sampler a model's folder recommends, or the app's conservative default."""
    default = SamplerSettings(min_p=DEFAULT_MIN_P)
    if model_dir is None:
        return ModelSampler(default, "app default")
    try:
        raw = read_json(Path(model_dir) / GENERATION_CONFIG)
    except OptiqError:  # missing or broken: the app's default
        return ModelSampler(default, "app default")
    fields: dict[str, Any] = {}
    if raw.get("do_sample") is False:
        fields["temperature"] = 0.0
    elif isinstance(raw.get("temperature"), (int, float)):
        fields["temperature"] = float(raw["temperature"])
    if isinstance(raw.get("top_p"), (int, float)) and 0 < raw["top_p"] <= 1:
        fields["top_p"] = float(raw["top_p"])
    if isinstance(raw.get("top_k"), int) and raw["top_k"] > 0:
        fields["top_k"] = raw["top_k"]
    if isinstance(raw.get("min_p"), (int, float)) and 0 <= raw["min_p"] < 1:
        fields["min_p"] = float(raw["min_p"])
    if not fields:
        return ModelSampler(default, "app default")
    try:
        return ModelSampler(SamplerSettings(**fields), GENERATION_CONFIG)
    except OptiqError:  # a nonsense value in the file (negative temperature): ignore the file
        return ModelSampler(default, "app default")


def resolve_sampler(model_dir: Path | str | None, **overrides: Any) -> tuple[SamplerSettings, str]:
    """The model's sampler with the user's choices (non-None ``overrides``) on top.

    Raises OptiqError naming the bad value. The source says "you" when the user set
    the sampling values themselves.
    """
    base = model_sampler(model_dir)
    given = {k: v for k, v in overrides.items() if v is not None}
    settings = replace(base.settings, **given)
    sampling = {"temperature", "top_p", "top_k", "min_p"}
    return settings, ("you" if sampling & given.keys() else base.source)


