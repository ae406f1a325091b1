"""Bit counting equals mlx-lm's compute_bits_per_weight on real quantized models."""

from __future__ import annotations

import random

import pytest

from optiq_tui.quant.config import KEEP


def _load(path):
    from mlx_lm import load

    model, _tok, config = load(str(path), return_config=True)
    return model, config


# gpt_oss (experts, sinks, float32) is checked in test_quant_sensitivity's round trip:
# its 201k-token vocabulary makes random widths slow to pack here.
@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen3_dir"])
@pytest.mark.parametrize("group_size", [32, 64])
def test_bpw_matches_mlx_lm_after_save_and_load(fixture, group_size, request, tmp_path):
    from mlx_lm.utils import compute_bits_per_weight

    from optiq_tui.quant.layers import bit_budget, quant_items
    from optiq_tui.quant.writer import quantize_in_place, write_model

    src = request.getfixturevalue(fixture)
    model, config = _load(src)
    items = quant_items(model, group_size, tied=not hasattr(model, "lm_head"))
    budget = bit_budget(model, items, group_size)
    rng = random.Random(group_size)
    choice = {i.path: rng.choice([2, 3, 4, 5, 6, 8, KEEP]) for i in items if i.quantizable}
    predicted = budget.bpw(items, choice)

    out_cfg = quantize_in_place(model, config, choice, group_size)
    assert compute_bits_per_weight(model) == pytest.approx(predicted, abs=1e-9)
    write_model(model, out_cfg, src, tmp_path)
    loaded, _ = _load(tmp_path)
    assert compute_bits_per_weight(loaded) == pytest.approx(predicted, abs=1e-9)


def test_indivisible_layers_are_kept_and_counted(tmp_path):
    from mlx_lm.utils import compute_bits_per_weight

    from optiq_tui.quant.layers import bit_budget, quant_items
    from optiq_tui.quant.writer import quantize_in_place
    from tests.tiny import build_tiny_llama

    # hidden 96: every layer reading the hidden state has 96 inputs, not a multiple of 64.
    src = build_tiny_llama(tmp_path / "odd", hidden=96, heads=4, kv_heads=2, intermediate=128)
    model, config = _load(src)
    items = quant_items(model, 64, tied=True)
    kept = {i.path for i in items if not i.quantizable}
    assert "model.layers.0.self_attn.q_proj" in kept and "model.embed_tokens" in kept
    assert all("down_proj" not in p for p in kept)
    assert all("not a multiple of group size 64" in i.reason for i in items if not i.quantizable)
    budget = bit_budget(model, items, 64)
    choice = {i.path: 4 for i in items if i.quantizable}
    quantize_in_place(model, config, choice, 64)
    assert compute_bits_per_weight(model) == pytest.approx(budget.bpw(items, choice), abs=1e-9)
