"""Error-compensated quantization: never worse than round-to-nearest on its own
calibration inputs, on mlx's exact grid, with Hessians collected from a block's real call."""

from __future__ import annotations

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest

from optiq_tui.quant.compensate import (
    collect_hessians,
    compensate,
    compensate_quantized,
    output_error,
    quantized_module,
)
from optiq_tui.quant.layers import qdq


def _inputs(n: int, d: int, seed: int) -> mx.array:
    # Correlated features, like real activations: this is where compensation pays.
    mx.random.seed(seed)
    mix = mx.eye(d) + 0.15 * mx.random.normal((d, d))
    return mx.random.normal((n, d)) @ mix


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_compensation_never_worse_than_round_to_nearest(bits, group_size):
    x = _inputs(200, 128, seed=bits)
    w = (0.05 * mx.random.normal((48, 128))).astype(mx.float16)
    xtx = x.T @ x
    w_hat = compensate(w, xtx, bits, group_size)
    ours = output_error(w, w_hat, xtx)
    rtn = output_error(w, qdq(w, bits, group_size), xtx)
    assert (ours <= rtn * (1 + 1e-9)).all()
    assert ours.sum() < 0.8 * rtn.sum()
    # Exactly on mlx's grid: a writer that calls mx.quantize ships these values. Rows
    # kept at plain RTN are exempt: mlx's own RTN output can drift by an ulp when re-quantized.
    codes, scales, biases = mx.quantize(w_hat, group_size=group_size, bits=bits)
    again = mx.dequantize(codes, scales, biases, group_size=group_size, bits=bits)
    drift = mx.any(again != w_hat, axis=1)
    plain_rtn = mx.all(w_hat == qdq(w, bits, group_size), axis=1)
    assert not mx.any(drift & ~plain_rtn).item()
    assert mx.sum(plain_rtn).item() <= 2
    assert w_hat.dtype == mx.float16


@pytest.mark.parametrize("dtype", [mx.float32, mx.bfloat16])
def test_triple_is_what_mx_quantize_of_the_result_gives(dtype):
    x = _inputs(100, 64, seed=7)
    w = (0.05 * mx.random.normal((16, 64))).astype(dtype)
    triple = compensate_quantized(w, x.T @ x, 4, 32)
    again = mx.quantize(compensate(w, x.T @ x, 4, 32), group_size=32, bits=4)
    assert all(mx.array_equal(a, b) for a, b in zip(triple, again))
    assert triple[1].dtype == dtype


def test_unseen_layer_falls_back_to_round_to_nearest():
    w = mx.random.normal((8, 64)).astype(mx.float16)
    w_hat = compensate(w, mx.zeros((64, 64)), 4, 64)
    assert mx.array_equal(w_hat, qdq(w, 4, 64))


def test_hessians_from_a_llama_block_and_the_block_restored():
    from mlx_lm.models import llama

    args = llama.ModelArgs(model_type="llama", hidden_size=64, num_hidden_layers=1,
                           intermediate_size=128, num_attention_heads=4, rms_norm_eps=1e-5,
                           vocab_size=32, num_key_value_heads=2)
    mx.random.seed(0)
    block = llama.TransformerBlock(args)
    xs = [mx.random.normal((2, 16, 64)), mx.random.normal((1, 16, 64))]
    before = [block(x, mask="causal") for x in xs]
    xtx, tokens, outs = collect_hessians(block, [((x,), {"mask": "causal"}) for x in xs])
    assert set(xtx) == {f"self_attn.{p}_proj" for p in "qkvo"} | {
        f"mlp.{p}_proj" for p in ("gate", "up", "down")}
    assert tokens["self_attn.q_proj"].tolist() == [48]
    assert mx.allclose(xtx["self_attn.q_proj"], xtx["self_attn.v_proj"])
    normed = [block.input_layernorm(x).reshape(-1, 64) for x in xs]
    expect = sum(n.T @ n for n in normed)
    assert mx.allclose(xtx["self_attn.k_proj"], expect, rtol=1e-4, atol=1e-3)
    assert xtx["mlp.down_proj"].shape == (128, 128)
    assert type(block.self_attn.q_proj) is nn.Linear
    assert all(mx.allclose(a, b) for a, b in zip(before, outs))


def test_moe_experts_get_hessians_from_their_routed_tokens_and_compensate():
    from mlx_lm.models.switch_layers import SwitchGLU

    mx.random.seed(3)
    glu = SwitchGLU(64, 64, 4)
    x = _inputs(80, 64, seed=3).reshape(1, 80, 64)
    # Expert 3 never chosen: its Hessian stays zero and it falls back to RTN.
    idx = mx.array(np.random.default_rng(0).integers(0, 3, size=(1, 80, 2)), dtype=mx.uint32)
    calls = [((x, idx), {}), ((x[:, :10], idx[:, :10]), {})]  # sorted and unsorted paths
    xtx, tokens, _ = collect_hessians(glu, calls)
    assert set(xtx) == {"gate_proj", "up_proj", "down_proj"}
    flat = np.array(x.reshape(-1, 64))
    routed = np.concatenate([np.array(idx).reshape(80, 2), np.array(idx[:, :10]).reshape(10, 2)])
    rows = np.concatenate([flat, flat[:10]])
    for e in range(4):
        hit = (routed == e).sum(axis=1)
        expect = (rows * hit[:, None]).T @ rows
        assert np.allclose(np.array(xtx["up_proj"][e]), expect, rtol=1e-4, atol=1e-2)
        assert tokens["up_proj"][e] == hit.sum() == tokens["down_proj"][e]
    w = glu.down_proj.weight
    h = xtx["down_proj"]
    for bits in (3, 4):
        w_hat = compensate(w, h, bits, 32)
        ours, rtn = output_error(w, w_hat, h), output_error(w, qdq(w, bits, 32), h)
        assert (ours <= rtn * (1 + 1e-9)).all()
        assert ours[:3].sum() < 0.9 * rtn[:3].sum()
        assert mx.array_equal(w_hat[3], qdq(w[3], bits, 32))
    layer = quantized_module(glu.down_proj, compensate_quantized(w, h, 4, 32), 4, 32)
    assert mx.array_equal(mx.dequantize(layer.weight, layer.scales, layer.biases,
                                        group_size=32, bits=4), compensate(w, h, 4, 32))


def test_an_expert_stack_is_compensated_as_each_expert_alone():
    # One column loop over all experts gives each expert what it would get alone: wider
    # than one block (the blocks' cross update), an expert no token reached (RTN), and a
    # near-singular Hessian (damped harder, for that expert only).
    mx.random.seed(5)
    experts, rows, d = 4, 24, 256
    x = mx.stack([_inputs(300, d, seed=e) for e in range(experts)])
    xtx = mx.matmul(x.transpose(0, 2, 1), x)
    xtx[1] = mx.zeros((d, d))
    low_rank = _inputs(4, d, seed=9)
    xtx[2] = low_rank.T @ low_rank - mx.eye(d)
    h2 = np.array(xtx[2], dtype=np.float64)
    assert np.linalg.eigvalsh(h2 + 0.01 * np.mean(np.diag(h2)) * np.eye(d)).min() < 0  # needs more damping
    w = (0.05 * mx.random.normal((experts, rows, d))).astype(mx.float16)
    for bits, group_size in ((4, 64), (3, 32)):
        stacked = compensate_quantized(w, xtx, bits, group_size, block=128)
        alone = [compensate_quantized(w[e], xtx[e], bits, group_size, block=128) for e in range(experts)]
        rtn = mx.quantize(w, group_size=group_size, bits=bits)
        for part, name in zip(range(3), ("codes", "scales", "biases")):
            assert mx.array_equal(stacked[part], mx.stack([a[part] for a in alone])), name
            assert mx.array_equal(stacked[part][1], rtn[part][1]), name
            assert not mx.array_equal(stacked[part][0], rtn[part][0]), name
