"""A layer's group size as part of its candidate width: 4-bit g128 is another candidate than
4-bit at the run's group, costed exactly, measured, allocated, compensated and written."""

from __future__ import annotations

import json
import random

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
import pytest

from optiq_tui.quant.config import KEEP, QuantConfig, Width, group_of, width
from tests import zoo
from tests.test_quant_zoo import QUANT_SKIPS, _params


def _load(path):
    from mlx_lm import load

    model, _tok, config = load(str(path), return_config=True)
    return model, config


def test_a_width_at_another_group_reads_as_bits_but_is_another_candidate():
    w = Width(4, 128)
    assert w <= 4 and w > 3 and w != KEEP and int(w) == 4
    assert w != 4 and 4 != w and len({4, w, Width(4, 128), Width(4, 32)}) == 3
    assert width(4, 64, 64) == 4 and type(width(4, 64, 64)) is int and width(4, 128, 64) == w
    assert group_of(w, 64) == 128 and group_of(4, 64) == 64
    assert json.dumps({"layer": w}) == '{"layer": 4}'
    plus = QuantConfig.from_preset("optiq-plus").candidates
    assert {4, KEEP, Width(4, 128), Width(3, 128)} <= set(plus) and Width(16, 128) not in plus
    assert Width(3, 32) not in plus  # g32 measured as no gain on the demo (config.py)
    assert QuantConfig.from_preset("optiq-best").candidates == QuantConfig.from_preset("optiq-best").widths


def _mixed_choice(model, items, group_size: int, seed: int) -> dict:
    """A random width per layer, at the run's group or another that divides its inputs."""
    rng = random.Random(seed)
    choice = {}
    for i in items:
        if not i.quantizable:
            continue
        fits = [g for g in (32, 64, 128) if i.shape[-1] % g == 0]
        choice[i.path] = width(rng.choice([2, 3, 4, 5, 6, 8, KEEP]), rng.choice(fits), group_size)
    return choice


def _assert_written_as_planned(src, choice, group_size, items, budget, dest,
                               exact_bits: bool = True) -> None:
    from mlx_lm.utils import compute_bits_per_weight

    from optiq_tui.quant.writer import quantize_in_place, write_model

    model, config = _load(src)
    out_cfg = quantize_in_place(model, config, choice, group_size)
    predicted = budget.bpw(items, {i.path: choice.get(i.path, KEEP) for i in items})
    if exact_bits:
        assert compute_bits_per_weight(model) == pytest.approx(predicted, abs=1e-9)
    write_model(model, out_cfg, src, dest)
    loaded, saved_cfg = _load(dest)  # stock mlx-lm, per-layer dicts from config.json
    if exact_bits:
        assert compute_bits_per_weight(loaded) == pytest.approx(predicted, abs=1e-9)
    modules = dict(loaded.named_modules())
    for path, w in choice.items():
        m = modules[path]
        if w == KEEP:
            assert not hasattr(m, "scales"), path
        else:
            assert (m.bits, m.group_size) == (int(w), group_of(w, group_size)), path
            assert saved_cfg["quantization"][path]["group_size"] == group_of(w, group_size)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_qwen3_dir", "moe"])
def test_mixed_groups_cost_exactly_and_load_as_planned(fixture, request, tmp_path):
    from optiq_tui.quant.layers import bit_budget, quant_items
    from tests.tiny import build_tiny_qwen3_moe

    src = (build_tiny_qwen3_moe(tmp_path / "moe", hidden=128) if fixture == "moe"
           else request.getfixturevalue(fixture))
    model, _ = _load(src)
    items = quant_items(model, 64, tied=not hasattr(model, "lm_head"))
    budget = bit_budget(model, items, 64)
    choice = _mixed_choice(model, items, 64, seed=1)
    assert any(isinstance(w, Width) for w in choice.values())
    _assert_written_as_planned(src, choice, 64, items, budget, tmp_path / "q")


@pytest.mark.parametrize("arch", _params("quantize"))
def test_mixed_groups_written_for_every_architecture(arch, tmp_path):
    if arch in QUANT_SKIPS:
        pytest.skip(QUANT_SKIPS[arch])
    from optiq_tui.quant.layers import bit_budget, quant_items

    src = zoo.write(arch, tmp_path / arch)
    model, _ = _load(src)
    items = quant_items(model, 32, tied=not hasattr(model, "lm_head"))
    if not any(i.quantizable for i in items):
        pytest.skip("no weight of this tiny config divides into groups of 32")
    budget = bit_budget(model, items, 32)
    # The layout, not the count: a few tiny configs are off by ~1e-3 bpw for any plan, one
    # group size or several (bailing_hybrid), which the fixtures above pin exactly.
    _assert_written_as_planned(src, _mixed_choice(model, items, 32, seed=2), 32, items, budget,
                               tmp_path / "q", exact_bits=False)


def test_the_allocator_pays_for_a_sensitive_layer_with_coarser_groups():
    from optiq_tui.quant.allocate import allocate
    from optiq_tui.quant.layers import BitBudget, QuantItem

    items = [QuantItem(f"l{i}", "linear", (128, 128), 0, True) for i in range(4)]
    budget = BitBudget(4 * 128 * 128, 0.0, 16, 64)
    g128 = Width(4, 128)
    # Three layers barely care about 4-bit g64 against g128; one is badly hurt at 4 bits.
    scores = {f"l{i}": {4: 1e-3, g128: 1.1e-3, 8: 1e-5} for i in range(3)}
    scores["l3"] = {4: 1.0, g128: 1.2, 8: 1e-3}
    widths = (4, 8, g128)
    alloc = allocate(items, scores, budget, 4.5 + 1e-9, widths)
    # 3 x 4.25 + 8.5 > 4 x 4.5: 8 bits do not fit, so every layer stays at 4 bits g64 ...
    assert alloc.choice == {f"l{i}": 4 for i in range(4)}
    # ... but 5 bits g128 (5.25) does: 4-bit g128 on the other three pays for it exactly.
    g5 = Width(5, 128)
    scores = {p: {**s, g5: s[g128] / 4} for p, s in scores.items()}
    alloc = allocate(items, scores, budget, 4.5 + 1e-9, (4, 8, g128, g5))
    assert alloc.choice == {"l0": g128, "l1": g128, "l2": g128, "l3": g5}
    assert alloc.bpw == pytest.approx(4.5)


def test_the_sensitivity_cache_keeps_groups_apart(tmp_path, monkeypatch):
    monkeypatch.setenv("OPTIQ_HOME", str(tmp_path))
    from optiq_tui.quant import cache

    record = {"scores": {"a": {4: 0.5, Width(4, 128): 0.7, KEEP: 0.0}},
              "probes": {"a": {Width(3, 32): 2.0}}, "key": "k"}
    cache.save_scores("k", record)
    back = cache.load_scores("k")
    assert back["scores"] == record["scores"] and back["probes"] == record["probes"]
    assert isinstance(next(iter(back["probes"]["a"])), Width)
    assert cache.cache_key("f", "c", 64, (4, Width(4, 128)), False) != cache.cache_key(
        "f", "c", 64, (4, 4), False)


def test_fisher_scores_other_groups_where_they_divide_the_inputs(tiny_llama_dir):
    from optiq_tui.quant.backbone import Backbone
    from optiq_tui.quant.calibration import calibration_for
    from optiq_tui.quant.fisher import fisher_scores
    from optiq_tui.quant.layers import quant_items
    from optiq_tui.quant.pipeline import load_source

    model, tok, cfg = load_source(tiny_llama_dir, False)
    items = quant_items(model, 64, tied=not hasattr(model, "lm_head"))
    bb = Backbone(model, cfg)
    cal = calibration_for(tok, QuantConfig(n_calibration=2, seq_len=64))
    widths = (3, 4, Width(3, 32), Width(4, 128))
    scores = fisher_scores(bb, items, cal.sequences, widths, 64)
    for i in items:
        kl = scores[i.path]
        assert (Width(4, 128) in kl) == (i.shape[-1] % 128 == 0), i.path  # hidden 64: only down_proj
        assert Width(3, 32) in kl and 3 in kl
        # Smaller groups round more finely: less predicted damage at the same bits.
        assert kl[Width(3, 32)] < kl[3], i.path


def test_compensation_quantizes_each_layer_at_its_own_group(tiny_llama_dir):
    import mlx_lm

    from optiq_tui.quant.plus import compensate_model
    from tests.test_quant_plus import _sequences, assert_closer_than_rounding

    source, tok = mlx_lm.load(str(tiny_llama_dir))
    seqs = _sequences(tok)
    paths = [p for p, m in source.named_modules() if ".layers." in p and isinstance(m, nn.Linear)]
    choice = {p: (Width(3, 128) if p.endswith("down_proj") else 3) for p in paths}
    model, _ = mlx_lm.load(str(tiny_llama_dir))
    triples = compensate_model(model, choice, 64, seqs[:3])
    for p, (codes, scales, _b) in triples.items():
        d = dict(source.named_modules())[p].weight.shape[-1]
        assert scales.shape[-1] == d // group_of(choice[p], 64), p
    rtn_choice = {p: 3 for p in paths}  # the test's rounding baseline is 3 bits g64 everywhere
    assert_closer_than_rounding(model, source, tiny_llama_dir, rtn_choice, 64, seqs[3])


def test_plus_writes_the_groups_it_allocated(tiny_llama_dir):
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.quant.pipeline import quantize

    cfg = QuantConfig.from_preset("optiq-plus", n_calibration=2, seq_len=128, verify=False,
                                  target_bpw=4.4)
    result = quantize(inspect_model(tiny_llama_dir), cfg, progress=lambda e: None)
    meta = json.loads((result.path / "optiq_quant.json").read_text())
    written = json.loads((result.path / "config.json").read_text())["quantization"]
    model, _ = _load(result.path)
    modules = dict(model.named_modules())
    for path, bits in meta["layers"].items():
        if bits == KEEP:
            continue
        group = meta["layer_groups"].get(path, meta["group_size"])
        assert (written[path]["bits"], written[path]["group_size"]) == (bits, group), path
        assert (modules[path].bits, modules[path].group_size) == (bits, group), path
    assert result.achieved_bpw <= 4.4 + 1e-9


@pytest.mark.parametrize("tied", [True, False])
def test_the_head_is_compensated_on_what_reaches_it(tied, tmp_path, monkeypatch):
    """The (tied) head is compensated on the model's own final hidden states (its final norm
    included); its rows are never worse than rounding on them, and better in sum."""
    import mlx_lm

    from optiq_tui.quant import plus
    from optiq_tui.quant.compensate import output_error
    from optiq_tui.quant.layers import qdq
    from tests.test_quant_plus import _sequences
    from tests.tiny import build_tiny_llama

    folder = build_tiny_llama(tmp_path / "m", tie=tied)
    source, tok = mlx_lm.load(str(folder))
    seqs = _sequences(tok)
    head_path, head = plus._head(source)
    assert head_path == ("model.embed_tokens" if tied else "lm_head")
    calls = []
    real = plus.compensate_quantized
    monkeypatch.setattr(plus, "compensate_quantized",
                        lambda w, xtx, *a: calls.append((w, xtx)) or real(w, xtx, *a))
    choice = {p: 3 for p, m in source.named_modules() if hasattr(m, "to_quantized") and "weight" in m}
    model, _ = mlx_lm.load(str(folder))
    triples = plus.compensate_plans(model, [choice], 64, seqs[:3])[0]
    assert head_path in triples
    w, xtx = calls[-1]  # the head comes last, after every block
    assert mx.array_equal(w, head.weight)
    # XᵀX is that of the source's final hidden states, as its own code computes them
    # (in float32 there, in the model's dtype here: hence the tolerance).
    want = sum(mx.matmul(h.T, h) for h in (source.model(mx.array([list(s)]))[0].astype(mx.float32)
                                            for s in seqs[:3]))
    assert (mx.abs(xtx - want).max() <= 1e-2 * mx.abs(want).max()).item()
    # The model is left as it was.
    assert all(mx.array_equal(a, b) for (_p, a), (_q, b) in zip(
        tree_flatten(model.parameters()), tree_flatten(source.parameters())))
    err_c = output_error(w, mx.dequantize(*triples[head_path], group_size=64, bits=3), xtx)
    err_r = output_error(w, qdq(w, 3, 64), xtx)
    assert (err_c <= err_r).all() and err_c.sum() < err_r.sum()


def test_plus_gates_low_widths_on_compensated_plans_and_ships_the_winner(tiny_llama_dir, monkeypatch):
    """At a budget that needs 3-bit layers, the gate compensates both plans (with and without
    them) in one pass, and the quantize stage writes the chosen one's compensated layers, not
    a third run; a layer both plans give the same width is compensated once."""
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.quant import plus
    from optiq_tui.quant.pipeline import quantize

    runs, made = [], []
    real_plans, real_one = plus.compensate_plans, plus.compensate_quantized

    def counted(model, choices, *a, **kw):
        out = real_plans(model, choices, *a, **kw)
        runs.append(list(zip([dict(c) for c in choices], out)))
        return out

    monkeypatch.setattr(plus, "compensate_plans", counted)
    monkeypatch.setattr(plus, "compensate_quantized", lambda w, *a: made.append(a) or real_one(w, *a))
    cfg = QuantConfig.from_preset("optiq-plus", n_calibration=3, seq_len=128, verify=False,
                                  target_bpw=4.5, name="gated")
    result = quantize(inspect_model(tiny_llama_dir), cfg, progress=lambda e: None)
    assert len(runs) == 1 and len(runs[0]) == 2  # one pass, two plans; the quantize stage reused it
    runs = runs[0]
    assert len(made) == len({(p, repr(w)) for c, _t in runs for p, w in c.items() if w != KEEP})
    meta = json.loads((result.path / "optiq_quant.json").read_text())
    shipped = [t for c, t in runs if {p: int(b) for p, b in c.items() if b != KEEP} == {
        p: b for p, b in meta["layers"].items() if b != KEEP}]
    assert shipped, "the written plan is one of the two compensated"
    model, _ = _load(result.path)
    modules = dict(model.named_modules())
    for path, (codes, scales, biases) in shipped[0].items():
        assert mx.array_equal(modules[path].weight, codes) and mx.array_equal(modules[path].scales, scales)
