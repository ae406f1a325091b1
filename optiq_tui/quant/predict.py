"""How big a quant will be, before making it (for the quantize form)."""

from __future__ import annotations

from dataclasses import dataclass

from optiq_tui.library import model_files as mf
from optiq_tui.quant.config import QuantConfig, cost_per_param


@dataclass(frozen=True)
class SizePrediction:
    disk_bytes: int
    memory_bytes: int
    bpw: float


def predict_size(info, config: QuantConfig) -> SizePrediction:
    """Size on disk and in memory of quantizing ``info`` with ``config``.

    Uniform quants are counted exactly from the weight headers (a 2D or 3D
    weight whose last dimension divides the group gets the width, the rest
    stays 16-bit); an OptiQ quant lands at most at its target, so that is used.
    """
    table = mf.tensor_table(info.path)
    total = 0
    bits = 0.0
    for name, (_dtype, shape, _nbytes) in table.items():
        n = 1
        for d in shape:
            n *= d
        total += n
        quantizable = name.endswith(".weight") and len(shape) >= 2 and shape[-1] % config.group_size == 0
        if config.uniform_bits is not None and quantizable:
            bits += n * cost_per_param(config.uniform_bits, config.group_size)
        else:
            bits += n * 16
    bpw = bits / total if config.uniform_bits is not None else config.target_bpw
    disk = int(total * bpw / 8)
    # In memory: the weights plus MLX's working buffers for a short prompt (about 5%).
    return SizePrediction(disk, int(disk * 1.05), round(bpw, 3))
