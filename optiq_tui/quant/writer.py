"""Write a quant as a standard mlx-lm folder with mlx-lm's own functions.

The per-layer widths go through ``mlx_lm.utils.quantize_model``'s predicate,
so config.json's ``quantization`` entry carries one override per layer and
stock ``mlx_lm.load`` rebuilds the same modules with no help.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

import mlx.nn as nn

from optiq_tui.quant.config import KEEP, group_of

# Files of the source folder that describe the source itself, not the tokenizer/chat setup.
_NOT_COPIED = {"config.json", "README.md", "optiq_quant.json", "optiq_import.json",
               "model.safetensors.index.json"}


def quantize_in_place(model: nn.Module, config: dict, choice: dict[str, int],
                      group_size: int) -> dict:
    """Quantize ``model`` (in place) to ``choice`` (path -> width; missing or KEEP: unquantized;
    a config.Width at its own group, else ``group_size``).

    Returns the config to save, with per-layer entries (width and group) for every quantized layer.
    """
    from mlx_lm.utils import quantize_model

    def predicate(path: str, _module: nn.Module):
        bits = choice.get(path, KEEP)
        if bits == KEEP:
            return False
        return {"group_size": group_of(bits, group_size), "bits": int(bits), "mode": "affine"}

    clean = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config")}
    # quantize_model prints a summary line on stdout, which belongs to --json output.
    with contextlib.redirect_stdout(sys.stderr):
        # The default width is never used: the predicate names every layer's width or False.
        _, out = quantize_model(model, clean, group_size, 4, quant_predicate=predicate)
    return out


def copy_tokenizer_files(source: Path, dest: Path) -> None:
    """Everything but the weights and the source's own descriptions (tokenizer, template,
    generation config, custom code)."""
    for item in source.iterdir():
        if item.is_file() and item.name not in _NOT_COPIED and not item.name.endswith(".safetensors"):
            shutil.copy2(item, dest / item.name)


def write_model(model: nn.Module, config: dict, source: Path, dest: Path) -> None:
    from mlx_lm.utils import save_config, save_model

    save_model(dest, model)
    save_config(dict(config), dest / "config.json")
    copy_tokenizer_files(source, dest)
