"""The memory planner: KV-cache arithmetic against hand-computed cases, the model's own
caches (sliding windows, MoE), weights counted like the allocation, and clean errors."""

from __future__ import annotations

import json

import pytest

from optiq_tui.cli import main
from optiq_tui.progress import OptiqError
from optiq_tui.quant.plan import (
    LayerCache,
    kv_cache_bytes,
    model_memory,
    parse_memory,
    plan,
    predict_peak,
)

SMOL = [LayerCache(kv_heads=3, head_dim=64)] * 30  # SmolLM2-135M


def test_kv_bytes_by_hand():
    # keys + values x 3 heads x 64 dims x 2048 tokens x 2 bytes x 30 layers
    assert kv_cache_bytes(SMOL, 2048) == 2 * 3 * 64 * 2048 * 2 * 30 == 47_185_920
    # mlx-lm grows the buffers 256 tokens at a time: 1000 tokens hold 1024.
    assert kv_cache_bytes(SMOL, 1000) == 2 * 3 * 64 * 1024 * 2 * 30
    assert kv_cache_bytes(SMOL, 1000, float_bytes=4) == 2 * 3 * 64 * 1024 * 4 * 30


def test_quantized_kv_by_hand():
    # 8 bits: one byte per value, plus a 2-byte scale and a 2-byte bias per 64 values.
    per_layer = 2 * 3 * 1024 * (64 * 1 + 2 + 2)
    assert kv_cache_bytes(SMOL, 1024, kv_bits=8) == 30 * per_layer
    # 4 bits with float32 scales (a CPU run widened to float32): 32 bytes + 8 per group.
    assert kv_cache_bytes(SMOL, 1024, kv_bits=4, float_bytes=4) == 30 * 2 * 3 * 1024 * (32 + 8)


def test_sliding_window_layers_are_bounded_and_stay_unquantized():
    layers = [LayerCache(8, 64, window=128), LayerCache(8, 64)]
    full = 2 * 8 * 64 * 4096
    window = 2 * 8 * 64 * 128
    assert kv_cache_bytes(layers, 4096) == (full + window) * 2
    # mlx-lm cannot quantize a rotating cache: only the full layer shrinks.
    assert kv_cache_bytes(layers, 4096, kv_bits=4) == full * (0.5 + 4 / 64) + window * 2


def test_gpt_oss_shape_from_its_own_caches():
    from optiq_tui.quant.plan import _shape, _skeleton

    config = {
        "model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 32,
        "num_hidden_layers": 4, "num_local_experts": 4, "num_experts_per_tok": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
        "sliding_window": 128, "rms_norm_eps": 1e-5, "rope_theta": 150000, "vocab_size": 100,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
    }
    shape = _shape(_skeleton(config, "F32"), config)
    assert [c.window for c in shape.layers] == [128, None, 128, None]
    assert shape.intermediate == 2 * 32  # two experts active per token
    assert kv_cache_bytes(shape.layers, 1024) == 2 * (2 * 2 * 16 * 1024 * 2) + 2 * (2 * 2 * 16 * 128 * 2)


def test_weights_counted_like_the_allocation(tiny_llama_dir):
    import mlx_lm
    from mlx.utils import tree_flatten

    mm = model_memory(tiny_llama_dir)
    model, _ = mlx_lm.load(str(tiny_llama_dir))
    params = tree_flatten(model.parameters())
    assert mm.total_params == sum(a.size for _, a in params)
    assert mm.source_bpw == pytest.approx(16.0, abs=0.01)
    stored = sum(a.nbytes for _, a in params)
    assert mm.weight_bytes(16.0, 64, 2) == pytest.approx(stored, rel=1e-3)
    assert mm.weight_bytes(16.0, 64, 4) == pytest.approx(2 * stored, rel=1e-3)
    # At 4.5 bpw with float16 scales the bytes are the bits: widening adds only floats.
    at_45 = mm.weight_bytes(4.5, 64, 2)
    assert at_45 == pytest.approx(4.5 * mm.total_params / 8, rel=1e-6)
    assert at_45 < mm.weight_bytes(4.5, 64, 4) < 2 * at_45


def test_plan_finds_the_largest_bpw_that_fits(tiny_llama_dir):
    mm = model_memory(tiny_llama_dir)
    kw = dict(float_bytes=2, fused=False, prefill_step=512)
    half = predict_peak(mm, 6.0, 4096, **kw).total
    result = plan(mm, half, 4096, **kw)
    assert 5.95 <= result.target_bpw <= 6.0
    assert result.peak.total <= half and not result.unquantized_fits
    assert plan(mm, 10**12, 4096, **kw).unquantized_fits
    with_kv = plan(mm, half, 4096, kv_bits=4, **kw)
    assert with_kv.target_bpw > result.target_bpw


def test_impossible_plan_is_one_clear_line(tiny_llama_dir):
    with pytest.raises(OptiqError, match=r"does not fit in 1\.0 MB .* even at 2\.\d\d bpw .*needs ≥"):
        plan(model_memory(tiny_llama_dir), 10**6, 32768)
    with pytest.raises(OptiqError, match="--kv-bits 7"):
        plan(model_memory(tiny_llama_dir), 10**9, 32768, kv_bits=7)


@pytest.mark.parametrize("text,value", [("16GB", 16 * 10**9), ("512 MB", 512 * 10**6),
                                        ("1.5g", 1_500_000_000), ("16", 16 * 10**9)])
def test_parse_memory(text, value):
    assert parse_memory(text) == value


def test_planned_kv_bits_reach_chat(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    # plan --kv-bits suggests the quantize that records them; chat then generates with a
    # quantized KV cache (mlx-lm's QuantizedKVCache), and says so. Heads of 64 (mlx-lm
    # packs the cache in groups of 64); the 16-wide heads of tiny-llama keep a float cache.
    from mlx_lm.models.cache import QuantizedKVCache

    from optiq_tui.engine import session
    from tests.tiny import build_tiny_llama

    wide = build_tiny_llama(tmp_path / "wide-heads", hidden=128, heads=2, kv_heads=1)

    assert main(["plan", str(tiny_llama_dir), "--memory", "19.9MB", "--context", "1024", "--kv-bits", "8"]) == 0
    assert "--kv-bits 8" in capsys.readouterr().out
    assert main(["quantize", str(tiny_llama_dir), "--uniform", "4", "--kv-bits", "7", "--name", "kv7"]) == 1
    assert "--kv-bits 7 is not a width" in capsys.readouterr().err
    for source, name in ((wide, "kv8"), (tiny_llama_dir, "kv8-narrow")):
        assert main(["quantize", str(source), "--uniform", "4", "--kv-bits", "8", "--name", name,
                     "--no-verify", "--json"]) == 0
    capsys.readouterr()
    caches = []
    real = session.ChatSession._prepare_cache

    def spy(self, prompt):
        cache, feed = real(self, prompt)
        caches.append(cache)
        return cache, feed

    monkeypatch.setattr(session.ChatSession, "_prepare_cache", spy)
    assert main(["run", "kv8", "Hello", "--max-tokens", "4", "--temp", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kv_bits"] == 8
    assert all(isinstance(c, QuantizedKVCache) and c.bits == 8 for c in caches[-1])
    assert main(["run", "kv8-narrow", "Hello", "--max-tokens", "4", "--temp", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["kv_bits"] is None
    assert not any(isinstance(c, QuantizedKVCache) for c in caches[-1])


def test_plan_is_an_engine_job(tiny_llama_dir):
    # The quantize form asks the engine (the plan builds the model's caches: MLX work).
    from optiq_tui.engine.client import InProcessClient

    client = InProcessClient()
    try:
        done = client.wait_for(client.plan(str(tiny_llama_dir), "40MB", 2048, kv_bits=8).id)
        assert done.state == "done"
        assert done.result == plan(model_memory(tiny_llama_dir), parse_memory("40MB"), 2048, kv_bits=8).to_dict()
        for memory, says in (("1KB", "does not fit in 1.0 KB"), ("lots", "cannot read a memory size")):
            failed = client.wait_for(client.plan(str(tiny_llama_dir), memory, 2048).id)
            assert failed.state == "failed" and says in failed.error and "\n" not in failed.error
    finally:
        client.close()


@pytest.mark.parametrize("text,value", [("32768", 32768), ("32,768", 32768), (" 2048 ", 2048)])
def test_parse_context(text, value):
    from optiq_tui.quant.plan import parse_context

    assert parse_context(text) == value


@pytest.mark.parametrize("text", ["many", "0", "-5", "2.5k"])
def test_parse_context_says_what_to_write(text):
    from optiq_tui.quant.plan import parse_context

    with pytest.raises(OptiqError, match="give a number of tokens like 32768"):
        parse_context(text)
