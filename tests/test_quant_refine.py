"""Refinement (quant/refine.py): tuned scales lower held-back KL and never raise it, the time box
and the step limit hold, cancel leaves nothing, and the refined quant loads in mlx-lm."""

from __future__ import annotations

import json
import threading

import mlx.core as mx
import mlx_lm
import pytest

from optiq_tui.progress import Cancelled, OptiqError, Progress
from optiq_tui.quant.config import QuantConfig
from optiq_tui.quant.refine import refine, source_targets
from optiq_tui.quant.writer import quantize_in_place


def _sequences(tokenizer, n: int) -> list[list[int]]:
    from tests.tiny import CORPUS

    ids = tokenizer.encode(" ".join(CORPUS[:60]))
    return [ids[i * 96:(i + 1) * 96] for i in range(n)]


@pytest.fixture(scope="module")
def tiny_targets(tiny_llama_dir):
    """The source's targets on 4 calibration and 2 held-back sequences of the tiny llama."""
    source, tok = mlx_lm.load(str(tiny_llama_dir))
    seqs = _sequences(tok, 6)
    return source_targets(source, seqs[:4], seqs[4:])


def _quantized(folder, bits: int = 3):
    model, _tok, config = mlx_lm.load(str(folder), return_config=True)
    choice = {p: bits for p, m in model.named_modules() if hasattr(m, "to_quantized") and ".layers." in p}
    quantize_in_place(model, config, choice, 32)
    return model


def _held_back_kl(model, targets) -> float:
    """KL of the model as it is (its own QuantizedLinear forward, not refine's dense views)."""
    from optiq_tui.measures.metrics import kl_from_logprobs, log_softmax

    kls = [kl_from_logprobs(ref, log_softmax(model(tokens))).reshape(-1) for tokens, ref in targets.held_back]
    return mx.mean(mx.concatenate(kls)).item()


def test_refine_lowers_held_back_kl_of_what_ships(tiny_llama_dir, tiny_targets):
    model = _quantized(tiny_llama_dir)
    start = _held_back_kl(model, tiny_targets)
    result = refine(model, tiny_targets, max_steps=12, learning_rate=1e-4, eval_every=3)
    assert result.steps == 12 and result.stopped == "steps" and result.layers == 14
    assert result.kl_before == pytest.approx(start, rel=1e-2)
    assert result.kl_after < 0.9 * result.kl_before
    # What refine measured (in float32) is what the quantized layers now compute in float16.
    assert _held_back_kl(model, tiny_targets) == pytest.approx(result.kl_after, rel=1e-2)
    q = model.model.layers[0].mlp.down_proj
    assert q.scales.dtype == mx.float16 and type(q).__name__ == "QuantizedLinear"


def test_moe_experts_are_refined_too(tmp_path):
    """qwen3_moe's expert stacks (QuantizedSwitchLinear) compute densely and are tuned."""
    from tests.tiny import build_tiny_qwen3_moe

    folder = build_tiny_qwen3_moe(tmp_path / "moe")
    source, tok = mlx_lm.load(str(folder))
    seqs = _sequences(tok, 6)
    targets = source_targets(source, seqs[:4], seqs[4:])
    model = _quantized(folder)
    experts = model.model.layers[0].mlp.switch_mlp.down_proj
    assert type(experts).__name__ == "QuantizedSwitchLinear"
    start, scales = _held_back_kl(model, targets), experts.scales
    result = refine(model, targets, max_steps=8, learning_rate=1e-4, eval_every=4)
    assert result.kl_before == pytest.approx(start, rel=1e-2)  # the dense view computes what gather_qmm does
    assert result.kl_after < result.kl_before and not mx.array_equal(experts.scales, scales)


def test_refine_never_returns_a_worse_quant(tiny_llama_dir, tiny_targets):
    model = _quantized(tiny_llama_dir)
    q = model.model.layers[0].self_attn.q_proj
    scales, biases = q.scales, q.biases
    # A learning rate that wrecks every step: the starting state stays, untouched.
    result = refine(model, tiny_targets, max_steps=4, learning_rate=1.0, eval_every=1)
    assert result.best_step == 0 and result.kl_after == result.kl_before
    assert q.scales is scales and q.biases is biases
    assert _held_back_kl(model, tiny_targets) == pytest.approx(result.kl_before, rel=1e-2)


def test_time_box_is_honoured(tiny_llama_dir, tiny_targets):
    """A clock that moves 10 s per finished step (not the wall clock): in a 35 s box steps
    start at 0, 10, 20 and 30 s; a fifth at 40 s would end past the box."""
    now = [0.0]

    def progress(event):
        if isinstance(event, Progress):
            now[0] += 10.0
            assert event.stage == "refine" and event.total == 35.0

    result = refine(_quantized(tiny_llama_dir), tiny_targets, seconds=35.0, eval_every=100,
                    progress=progress, clock=lambda: now[0])
    assert result.stopped == "time" and result.steps == 4
    assert refine(_quantized(tiny_llama_dir), tiny_targets, max_steps=2, seconds=1e9).steps == 2
    with pytest.raises(ValueError):
        refine(_quantized(tiny_llama_dir), tiny_targets)


def _library_empty() -> bool:
    from optiq_tui.settings import paths

    p = paths()
    return not any(p.models.iterdir()) and not any(p.staging.iterdir())


def _quantize(folder, progress=None, cancel=None, **kw):
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.quant.pipeline import quantize

    cfg = QuantConfig(uniform_bits=4, group_size=32, n_calibration=4, seq_len=96, **kw)
    return quantize(inspect_model(folder), cfg, progress=progress or (lambda e: None), cancel=cancel)


def test_cancel_while_refining_leaves_nothing(tiny_llama_dir):
    cancel = threading.Event()
    seen = []

    def progress(event):
        if isinstance(event, Progress) and event.stage == "refine":
            seen.append(event)
            cancel.set()  # the gate: the next step never starts

    with pytest.raises(Cancelled):
        _quantize(tiny_llama_dir, progress, cancel, name="r", refine_steps=50, verify=False)
    assert len(seen) == 1 and _library_empty()


def test_refined_quant_records_its_gain_and_loads_in_mlx_lm(tiny_llama_dir):
    from optiq_tui.quant.events import StageChanged

    stages = []
    result = _quantize(tiny_llama_dir, lambda e: stages.append(e) if isinstance(e, StageChanged) else None,
                       name="refined", refine_steps=8, verify=False)
    assert ("refine", "done") in [(e.stage, e.state) for e in stages]
    gain = result.refine
    assert gain["steps"] == 8 and gain["kl_after"] <= gain["kl_before"]
    meta = json.loads((result.path / "optiq_quant.json").read_text())
    assert meta["refine"] == gain
    assert "Refinement (DWQ-style)" in (result.path / "README.md").read_text()
    model, _ = mlx_lm.load(str(result.path))
    plain, _ = mlx_lm.load(str(tiny_llama_dir))
    assert model(mx.array([[1, 2, 3]])).shape == plain(mx.array([[1, 2, 3]])).shape
    if gain["best_step"]:
        q = model.model.layers[0].mlp.down_proj
        _w, scales, _b = mx.quantize(plain.model.layers[0].mlp.down_proj.weight, group_size=32, bits=4)
        assert not mx.array_equal(q.scales, scales)  # the tuned scales were written


def test_refine_settings_are_checked():
    with pytest.raises(OptiqError, match="--refine 0 minutes"):
        QuantConfig(refine_minutes=0).validate()
    with pytest.raises(OptiqError, match="at least one step"):
        QuantConfig(refine_steps=0).validate()
    assert not QuantConfig().refines and QuantConfig(refine_minutes=2).validate().refines
