"""The quantize pipeline end to end on tiny models: outputs, cache, cancel, failure paths."""

from __future__ import annotations

import errno
import json
import threading
from pathlib import Path

import pytest

from optiq_tui.progress import Cancelled, OptiqError, Progress
from optiq_tui.quant.config import QuantConfig
from optiq_tui.quant.events import STAGES, LayerScore, StageChanged

FAST = dict(n_calibration=2, seq_len=128, verify_tokens=256)


def _info(path):
    from optiq_tui.library.catalog import inspect_model

    return inspect_model(path)


def _run(path, progress=None, cancel=None, **kw):
    from optiq_tui.quant.pipeline import quantize

    cfg = QuantConfig.from_preset(kw.pop("preset", "optiq-4/8"), **{**FAST, **kw})
    return quantize(_info(path), cfg, progress=progress or (lambda e: None), cancel=cancel)


def _library_empty():
    from optiq_tui.settings import paths

    p = paths()
    return not any(p.models.iterdir()) and not any(p.staging.iterdir())


def test_optiq_quant_writes_a_loadable_model_with_card_and_metadata(tiny_llama_dir):
    from mlx_lm import load
    from mlx_lm.utils import compute_bits_per_weight

    events = []
    result = _run(tiny_llama_dir, progress=events.append, target_bpw=6.0, name="t1", verify_flips=True)
    assert result.achieved_bpw <= 6.0
    stages = [e.stage for e in events if isinstance(e, StageChanged) and e.state == "done"]
    assert stages == [s for s in STAGES if s != "refine"]  # refinement is off unless asked
    assert StageChanged("refine", "skipped") in events
    assert any(isinstance(e, LayerScore) and e.chosen_bits in (4, 8) for e in events)
    model, _tok, config = load(str(result.path), return_config=True)
    assert compute_bits_per_weight(model) == pytest.approx(result.achieved_bpw, abs=1e-9)
    meta = json.loads((result.path / "optiq_quant.json").read_text())
    assert meta["method"] == "optiq" and meta["target_bpw"] == 6.0
    for path, bits in meta["layers"].items():
        if bits != 16:
            assert config["quantization"][path]["bits"] == bits
    card = (result.path / "README.md").read_text()
    assert "uniform 4-bit" in card and "| model.layers.0.mlp.down_proj |" in card
    q = result.quality
    assert 0 <= q["quant"]["mean_kl"] and 0 < q["quant"]["top1"] <= 1
    assert q["quant"]["ppl_ratio"] == pytest.approx(q["quant"]["ppl"] / q["source_ppl"])
    flips = q["quant"]["flips"]
    assert len(flips["prompts"]) == 20 and len(flips["answers"]) == len(flips["source_answers"]) == 20
    assert "Receipts for this quant" in card and "greedy prompts" in card


def test_verify_interval_over_sequences(tiny_llama_dir):
    q = _run(tiny_llama_dir, target_bpw=5.0, name="ci", verify_tokens=1600).quality
    for key in ("quant", "uniform4"):
        assert q[key]["kl_sequences"] > 1
        assert q[key]["kl_low"] <= q[key]["mean_kl"] <= q[key]["kl_high"]
    assert "flips" not in q["quant"]  # opt-in: verify_flips


def test_second_quant_reuses_the_sensitivity_cache(tiny_llama_dir):
    first = _run(tiny_llama_dir, target_bpw=5.0, name="a", verify=False)
    events = []
    second = _run(tiny_llama_dir, progress=events.append, target_bpw=6.0, name="b", verify=False)
    assert not first.cache_hit and second.cache_hit
    # The Fisher pass reports its steps as "measure" progress; a cache hit has none.
    assert not [e for e in events if isinstance(e, Progress) and e.stage == "measure"]
    assert second.achieved_bpw > first.achieved_bpw


def test_cancel_mid_measure_leaves_nothing(tiny_llama_dir):
    cancel = threading.Event()

    def progress(event):
        if isinstance(event, LayerScore):
            cancel.set()

    with pytest.raises(Cancelled):
        _run(tiny_llama_dir, progress=progress, cancel=cancel, name="c")
    assert _library_empty()


def test_cancel_after_the_measurement_resumes_from_it(tiny_llama_dir):
    # Ctrl-C while verifying loses the output but not the measurement: the rerun skips it.
    cancel = threading.Event()

    def progress(event):
        if isinstance(event, StageChanged) and event.stage == "verify" and event.state == "running":
            cancel.set()

    with pytest.raises(Cancelled):
        _run(tiny_llama_dir, progress=progress, cancel=cancel, name="r", target_bpw=5.5)
    assert _library_empty()
    resumed = _run(tiny_llama_dir, name="r", target_bpw=5.5, verify=False)
    assert resumed.cache_hit and resumed.achieved_bpw <= 5.5


def test_full_disk_while_writing_leaves_nothing(tiny_llama_dir, monkeypatch):
    import mlx_lm.utils

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mlx_lm.utils, "save_model", full)
    with pytest.raises(OptiqError, match="disk is full"):
        _run(tiny_llama_dir, name="d", verify=False)
    assert _library_empty()


def test_already_quantized_source_is_refused_unless_dequantized(tiny_llama_dir, tmp_path):
    from optiq_tui.settings import paths

    base = _run(tiny_llama_dir, uniform_bits=4, name="u4", verify=False)
    assert base.bit_histogram == {4: 15}
    with pytest.raises(OptiqError, match="already quantized.*--dequantize"):
        _run(base.path, name="again")
    again = _run(base.path, name="again", dequantize=True, verify=False, target_bpw=5.5)
    assert again.achieved_bpw <= 5.5
    assert sorted(p.name for p in paths().models.iterdir()) == ["again", "u4"]


def test_bad_budget_and_empty_calibration_are_clear_errors(tiny_llama_dir, tmp_path):
    with pytest.raises(OptiqError, match="below the smallest"):
        _run(tiny_llama_dir, target_bpw=3.0, name="x")
    with pytest.raises(OptiqError, match="above the largest"):
        _run(tiny_llama_dir, target_bpw=12.0, name="x")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    with pytest.raises(OptiqError, match="is empty"):
        _run(tiny_llama_dir, calibration=empty, name="x")
    short = tmp_path / "short.txt"
    short.write_text("Too short.")
    with pytest.raises(OptiqError, match="at least 64"):
        _run(tiny_llama_dir, calibration=short, name="x")
    with pytest.raises(OptiqError, match="bit width 7"):
        _run(tiny_llama_dir, bits=(4, 7), name="x")
    assert _library_empty()


def test_indivisible_layers_stay_unquantized_and_are_logged(tmp_path):
    from mlx_lm import load

    from optiq_tui.progress import Log
    from tests.tiny import build_tiny_llama

    # intermediate 96: down_proj reads 96 inputs, not a multiple of the group size 64.
    src = build_tiny_llama(tmp_path / "odd", hidden=64, intermediate=96)
    logs = []
    result = _run(src, progress=lambda e: logs.append(e) if isinstance(e, Log) else None,
                  target_bpw=7.0, name="odd", verify=False)
    assert any("down_proj" in e.message and "kept unquantized" in e.message for e in logs)
    model, _ = load(str(result.path))
    assert type(model.model.layers[0].mlp.down_proj).__name__ == "Linear"
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "QuantizedLinear"
    assert result.unquantized == ["model.layers.1.mlp.down_proj", "model.layers.0.mlp.down_proj"]


def test_cli_json_summary(tiny_llama_dir, capsys):
    from optiq_tui.cli import main

    code = main(["quantize", str(tiny_llama_dir), "--target-bpw", "5.5", "--name", "cli",
                 "--no-verify", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "cli" and out["achieved_bpw"] <= 5.5
    code = main(["quantize", str(tiny_llama_dir), "--target-bpw", "2", "--json"])
    assert code == 1 and "below the smallest" in json.loads(capsys.readouterr().out)["error"]


def test_calibration_from_saved_conversations_reads_them_and_changes_nothing(tiny_llama_dir, capsys):
    import hashlib

    from optiq_tui.cli import main
    from optiq_tui.engine.conversations import ConversationStore
    from optiq_tui.library.model_files import OPTIQ_QUANT_FILE
    from optiq_tui.quant.calibration import build_calibration, conversation_documents

    assert main(["quantize", str(tiny_llama_dir), "--calibration-from-conversations", "--no-verify"]) == 1
    assert "no saved conversation" in capsys.readouterr().err  # refused before loading anything
    store = ConversationStore()
    ids = []
    for topic in ("tides", "sourdough"):
        cid = store.create("tiny-llama", topic)
        store.append(cid, "user", f"Tell me about {topic}.")
        store.append(cid, "assistant", f"Here is what I know about {topic}: " + "details " * 40,
                     reasoning="private thoughts")
        ids.append(cid)
    before = {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
              for p in store.folder.iterdir()}

    docs = conversation_documents(("all",))
    assert len(docs) == 2 and all("private thoughts" not in str(d) for d in docs)
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(tiny_llama_dir)
    plain, mixed = build_calibration(tok, seq_len=64), build_calibration(tok, seq_len=64, conversations=docs)
    assert mixed.digest != plain.digest  # a measurement made without them is not reused
    first = tok.decode(mixed.sequences[0])  # the user's chats come first, in their own template
    assert "<|im_start|>user\nTell me about" in first

    assert main(["quantize", str(tiny_llama_dir), "--calibration-from-conversations", ids[0] + ",nope",
                 "--no-verify"]) == 1
    assert "'nope' is not a conversation id" in capsys.readouterr().err
    assert main(["quantize", str(tiny_llama_dir), "--target-bpw", "5.5", "--name", "own-chats",
                 "--calibration-from-conversations", "--no-verify", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    meta = json.loads((Path(out["path"]) / OPTIQ_QUANT_FILE).read_text())
    assert meta["calibration"]["source"] == "shipped + 2 saved conversations"
    after = {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
             for p in store.folder.iterdir()}
    assert after == before
