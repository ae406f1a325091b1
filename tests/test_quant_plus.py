"""optiq-plus: block-by-block compensation through the model's own call, and the preset end to end."""

from __future__ import annotations

import mlx.core as mx
import mlx_lm
import pytest

from optiq_tui.quant.layers import get_module, qdq
from optiq_tui.quant.plus import compensate_model, record_block_calls


def _kl(ref_logits: mx.array, logits: mx.array) -> float:
    from optiq_tui.measures.metrics import token_kl

    return mx.mean(token_kl(ref_logits, logits)).item()


def assert_closer_than_rounding(model, source, folder, choice, group: int, held_out: list[int]) -> None:
    """The compensated ``model`` is nearer ``source`` on a held-out sequence than the same
    layers rounded to nearest at 3 bits."""
    rtn, _ = mlx_lm.load(str(folder))
    for path in choice:
        layer = get_module(rtn, path)
        layer.weight = qdq(layer.weight, 3, group)
    held = mx.array([held_out])
    ref = source(held)
    assert _kl(ref, model(held)) < _kl(ref, rtn(held))


def _sequences(tokenizer, n: int = 4) -> list[list[int]]:
    from tests.tiny import CORPUS

    ids = tokenizer.encode(" ".join(CORPUS[:40]))
    return [ids[i * 96:(i + 1) * 96] for i in range(n)]


def test_block_calls_are_what_the_model_passes(tiny_llama_dir):

    model, tok = mlx_lm.load(str(tiny_llama_dir))
    seqs = _sequences(tok, 2)
    first, rest = record_block_calls(model, seqs)
    assert len(first) == 2 and first[0].shape == (1, 96, 64)
    assert len(rest) == len(model.layers) and all(len(r) == 2 for r in rest)
    assert type(model.layers[0]).__name__ == "TransformerBlock"  # restored
    # Replaying the recorded calls block by block gives the model's own output.
    h = first[0]
    for i, block in enumerate(model.layers):
        args, kw = rest[i][0]
        h = block(h, *args, **kw)
    ref = model.model(mx.array([seqs[0]]))
    assert mx.allclose(model.model.norm(h), ref, atol=1e-3)


def test_compensated_model_is_closer_to_the_source_than_rtn(tiny_llama_dir):

    source, tok = mlx_lm.load(str(tiny_llama_dir))
    seqs = _sequences(tok)
    choice = {p: 3 for p, m in source.named_modules() if ".layers." in p and hasattr(m, "to_quantized")}
    model, _ = mlx_lm.load(str(tiny_llama_dir))
    triples = compensate_model(model, choice, 64, seqs[:3])
    assert set(triples) == set(choice)
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == mx.float16
    assert_closer_than_rounding(model, source, tiny_llama_dir, choice, 64, seqs[3])


@pytest.mark.parametrize("preset", ["optiq-plus"])
def test_plus_preset_writes_a_model_mlx_lm_loads(tiny_llama_dir, preset):
    from mlx_lm import load

    from optiq_tui.quant.config import QuantConfig
    from optiq_tui.quant.pipeline import quantize
    from optiq_tui.library.catalog import inspect_model

    cfg = QuantConfig.from_preset(preset, n_calibration=2, seq_len=128, verify_tokens=256,
                                  target_bpw=4.5)
    result = quantize(inspect_model(tiny_llama_dir), cfg, progress=lambda e: None)
    assert result.preset == "optiq-plus" and result.achieved_bpw <= 4.5 + 1e-6
    model, _ = load(str(result.path))
    q = model.model.layers[0].mlp.down_proj
    w = mx.dequantize(q.weight, q.scales, q.biases, group_size=q.group_size, bits=q.bits)
    source, _ = load(str(tiny_llama_dir))
    plain = qdq(source.model.layers[0].mlp.down_proj.weight, q.bits, q.group_size)
    assert not mx.array_equal(w, plain)  # compensated, not rounded to nearest
    assert model(mx.array([[1, 2, 3]])).shape[-1] == source(mx.array([[1, 2, 3]])).shape[-1]


def test_moe_experts_compensated_through_qwen3_moe(tmp_path):
    """qwen3_moe's ``model.layers`` is a fresh slice each time: the blocks are found in
    the model's own list, and the SwitchLinear experts get compensated triples."""

    from tests.tiny import build_tiny_qwen3_moe

    folder = build_tiny_qwen3_moe(tmp_path / "moe")
    source, tok = mlx_lm.load(str(folder))
    seqs = _sequences(tok)
    choice = {p: 3 for p, m in source.named_modules() if ".layers." in p and hasattr(m, "to_quantized")}
    assert any(p.endswith("switch_mlp.down_proj") for p in choice)
    model, _ = mlx_lm.load(str(folder))
    triples = compensate_model(model, choice, 32, seqs[:3])
    assert set(triples) == set(choice)
    experts = get_module(source, "model.layers.0.mlp.switch_mlp.down_proj").weight
    assert triples["model.layers.0.mlp.switch_mlp.down_proj"][0].shape[0] == experts.shape[0]
    assert_closer_than_rounding(model, source, folder, choice, 32, seqs[3])
