"""Where a chat's sampler comes from: the model's ``generation_config.json``, then the caller's choices.

Small models need the sampler their authors ship; a value the user set wins.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from optiq_tui.engine.session import SamplerSettings

GENERATION_CONFIG = "generation_config.json"


def resolve_sampler(model_dir: Path | str | None, **overrides: Any) -> tuple[SamplerSettings, str]:
    """The model's recommended sampler with non-None ``overrides`` on top, and where it came from."""
    fields: dict[str, Any] = {}
    try:
        raw = json.loads((Path(model_dir) / GENERATION_CONFIG).read_text()) if model_dir else {}
    except (OSError, ValueError):
        raw = {}
    if isinstance(raw, dict):
        if raw.get("do_sample") is False:
            fields["temperature"] = 0.0
        elif isinstance(raw.get("temperature"), (int, float)) and raw["temperature"] >= 0:
            fields["temperature"] = float(raw["temperature"])
        if isinstance(raw.get("top_p"), (int, float)) and 0 < raw["top_p"] <= 1:
            fields["top_p"] = float(raw["top_p"])
    given = {k: v for k, v in overrides.items() if v is not None}
    source = "you" if {"temperature", "top_p"} & given.keys() else (GENERATION_CONFIG if fields else "app default")
    return replace(SamplerSettings(**fields), **given), source
