"""The Fisher estimate against exact single-layer KL, and the round trip through mlx_lm.load."""

from __future__ import annotations

import json

import mlx.core as mx
from mlx.utils import tree_flatten
import numpy as np
import pytest

from optiq_tui.quant.config import QuantConfig


def _spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a))
    rb = np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def test_fisher_ranks_and_scales_like_exact_kl(tmp_path):
    from mlx_lm import load

    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.calibration import build_calibration
    from optiq_tui.quant.fisher import fisher_scores
    from optiq_tui.quant.layers import quant_items
    from optiq_tui.quant.probes import probe_item, reference_pass
    from tests.tiny import build_tiny_llama

    src = build_tiny_llama(tmp_path / "m", hidden=128, layers=2, intermediate=256, seed=3)
    model, tok, cfg = load(str(src), return_config=True)
    bb = Backbone(model, cfg)
    items = [i for i in quant_items(model, 64, bb.tied) if i.quantizable]
    cal = build_calibration(tok, n_sequences=6, seq_len=128, held_back=0)
    scores = fisher_scores(bb, items, cal.sequences, (3,), 64)
    ref = reference_pass(bb, cal.sequences)
    est = [scores[i.path][3] for i in items]
    exact = [probe_item(bb, ref, i.path, 3, 64, i.block) for i in items]
    assert _spearman(est, exact) > 0.8
    ratios = np.array(est) / np.array(exact)
    assert 0.5 < float(np.median(ratios)) < 2.0


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen3_dir", "tiny_gpt_oss_dir"])
def test_per_layer_widths_round_trip_through_stock_load(fixture, request):
    from mlx_lm import load
    from mlx_lm.utils import compute_bits_per_weight

    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.layers import bit_budget, get_module, quant_items
    from optiq_tui.quant.pipeline import load_source, quantize
    from optiq_tui.quant.probes import choice_weight_fn, reference_pass, run_probe
    from optiq_tui.quant.verify import loaded_weight_fn

    src = request.getfixturevalue(fixture)
    cfg = QuantConfig.from_preset("optiq-best", target_bpw=6.0, n_calibration=2, seq_len=32,
                                  verify=False, name=fixture)
    result = quantize(inspect_model(src), cfg)
    assert result.achieved_bpw <= 6.0
    model, _tok = load(str(result.path))
    layers = json.loads((result.path / "optiq_quant.json").read_text())["layers"]
    assert len(set(layers.values())) >= 2, "the allocation should mix widths"
    for path, bits in layers.items():
        module = get_module(model, path)
        if bits == 16:
            assert "scales" not in module
        else:
            assert module.bits == bits and module.group_size == 64
    # Bits counted before writing equal mlx-lm's count of what was loaded back.
    source, _, scfg = load_source(src, False)
    items = quant_items(source, 64, not hasattr(source, "lm_head"))
    predicted = bit_budget(source, items, 64).bpw(items, layers)
    assert compute_bits_per_weight(model) == pytest.approx(predicted, abs=1e-9)
    assert result.achieved_bpw == pytest.approx(predicted, abs=1e-9)
    # The loaded weights are exactly the quantize-dequantize the measurement used.
    bb = Backbone(source, scfg)
    ref = reference_pass(bb, [[1, 5, 9, 14, 3, 7, 2, 8] * 4])
    a = run_probe(bb, ref, loaded_weight_fn(model), -1).kl
    b = run_probe(bb, ref, choice_weight_fn(layers, 64), -1).kl
    assert mx.allclose(a, b, atol=1e-6).item()


@pytest.mark.parametrize("layers", [1, 3, 5, 8])
def test_fisher_scores_every_layer_whatever_the_block_count(tmp_path, layers):
    # Block counts that the checkpoint stride (ceil(sqrt(L))) does not divide once skipped blocks.
    from mlx_lm import load

    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.calibration import build_calibration
    from optiq_tui.quant.fisher import fisher_scores
    from optiq_tui.quant.layers import quant_items
    from tests.tiny import build_tiny_llama

    src = build_tiny_llama(tmp_path / "m", layers=layers)
    model, tok, cfg = load(str(src), return_config=True)
    bb = Backbone(model, cfg)
    items = [i for i in quant_items(model, 64, bb.tied) if i.quantizable]
    cal = build_calibration(tok, n_sequences=2, seq_len=64, held_back=0)
    scores = fisher_scores(bb, items, cal.sequences, (4, 8), 64)
    assert set(scores) == {i.path for i in items}
    assert {i.block for i in items} == set(range(-1, layers))
    for item in items:
        assert scores[item.path][4] > scores[item.path][8] > 0, item.path


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen3_dir", "tiny_gpt_oss_dir"])
def test_streamed_blocks_give_the_same_scores_and_free_the_weights(fixture, request):
    # Streaming reads each block from disk when a pass reaches it: the measurement must not
    # change, and between passes only the embedding / head stay in memory.
    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.calibration import build_calibration
    from optiq_tui.quant.fisher import fisher_scores
    from optiq_tui.quant.layers import quant_items
    from optiq_tui.quant.pipeline import load_source

    src = request.getfixturevalue(fixture)
    runs = []
    for stream in (False, True):
        model, tok, cfg = load_source(src, False)
        bb = Backbone(model, cfg)
        items = [i for i in quant_items(model, 64, bb.tied) if i.quantizable]
        cal = build_calibration(tok, n_sequences=2, seq_len=32, held_back=0)
        before = mx.get_active_memory()
        if stream:
            assert bb.stream_blocks(src)
            block_bytes = sum(v.nbytes for b in bb.blocks for _, v in tree_flatten(b.parameters()))
            assert before - mx.get_active_memory() >= 0.9 * block_bytes
        runs.append(fisher_scores(bb, items, cal.sequences, (4, 8), 64))
        if stream:  # the pass read every block and let it go again
            assert before - mx.get_active_memory() >= 0.9 * block_bytes
        del model, bb
    assert runs[0] == runs[1]


def test_a_dequantized_source_is_not_streamed(tiny_llama_dir, tmp_path):
    # Its weights on disk are the quantized ones, not what the measurement must use.
    from mlx_lm import load
    from mlx_lm.utils import quantize_model, save_model

    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.pipeline import load_source

    model, cfg = load(str(tiny_llama_dir), return_config=True)[0::2]
    _, qcfg = quantize_model(model, cfg, 64, 4)
    out = tmp_path / "q4"
    save_model(out, model)
    (out / "config.json").write_text(json.dumps(qcfg))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if (tiny_llama_dir / f).exists():
            (out / f).write_bytes((tiny_llama_dir / f).read_bytes())
    deq, _, dcfg = load_source(out, True)
    assert not Backbone(deq, dcfg).stream_blocks(out)


def test_streaming_reads_blocks_from_a_sharded_source(tiny_llama_dir, tmp_path):
    # Large models come in several safetensors files; a block may sit in any of them.
    import shutil

    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.calibration import build_calibration
    from optiq_tui.quant.fisher import fisher_scores
    from optiq_tui.quant.layers import quant_items
    from optiq_tui.quant.pipeline import load_source

    sharded = tmp_path / "sharded"
    shutil.copytree(tiny_llama_dir, sharded)
    weights = mx.load(str(sharded / "model.safetensors"))
    (sharded / "model.safetensors").unlink()
    names = sorted(weights)
    halves = [names[: len(names) // 2], names[len(names) // 2:]]
    index = {"metadata": {}, "weight_map": {}}
    for n, part in enumerate(halves, 1):
        file = f"model-0000{n}-of-00002.safetensors"
        mx.save_safetensors(str(sharded / file), {k: weights[k] for k in part}, metadata={"format": "mlx"})
        index["weight_map"].update({k: file for k in part})
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))

    runs = []
    for path, stream in ((tiny_llama_dir, False), (sharded, True)):
        model, tok, cfg = load_source(path, False)
        bb = Backbone(model, cfg)
        if stream:
            assert bb.stream_blocks(path)
        items = [i for i in quant_items(model, 64, bb.tied) if i.quantizable]
        cal = build_calibration(tok, n_sequences=2, seq_len=32, held_back=0)
        runs.append(fisher_scores(bb, items, cal.sequences, (4, 8), 64))
    assert runs[0] == runs[1]
