"""App folders with real tiny models, for snapshot tests and for looking at screens by hand.

Names are long on purpose (they are what real quants are called), so a screen
that cuts them shows it. Everything is built on the spot and deterministic.
"""

from __future__ import annotations

from pathlib import Path

SOURCE = "SmolLM2-135M-Instruct"


def build_library(home: Path) -> dict[str, Path]:
    """A source model, its uniform 4-bit and its OptiQ quants, and a thinking model; name -> folder."""
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.quant.config import QuantConfig
    from optiq_tui.quant.pipeline import quantize
    from tests.tiny import build_tiny_llama, build_tiny_qwen3

    models = home / "models"
    # The fixtures' default shape: its greedy answers are visible letters, not blanks.
    source = build_tiny_llama(models / SOURCE)
    build_tiny_qwen3(models / "Qwen3-0.6B-tiny")
    info = inspect_model(source)
    quantize(info, QuantConfig(uniform_bits=4, verify=False, name=f"{SOURCE}-uniform-4bit"))
    quantize(info, QuantConfig(target_bpw=5.0, bits=(4, 8), verify=False, n_calibration=2, seq_len=64,
                               name=f"{SOURCE}-optiq-5.0bpw"))
    return {p.name: p for p in sorted(models.iterdir())}
