"""evaluate() on a tiny llama and its 4-bit and 8-bit mlx-lm quants."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

from optiq_tui.eval import quality
from optiq_tui.measures.flips import flip_prompts
from optiq_tui.eval.quality import evaluate
from optiq_tui.eval.results import ModelEvaluated
from optiq_tui.library.provenance import find_reference
from optiq_tui.library.catalog import inspect_model
from optiq_tui.progress import Cancelled, OptiqError, Progress
from optiq_tui.settings import paths
from tests.tiny import CHATML_TEMPLATE, build_tokenizer

FAST = dict(max_tokens=1024, seq_len=256, contexts=(300,), hops=(1,), trials=1)


@pytest.fixture(scope="module")
def family(tiny_llama_dir, tmp_path_factory):
    """(source, 4-bit, 8-bit) ModelInfos made with stock mlx-lm."""
    from mlx_lm import convert

    root = tmp_path_factory.mktemp("quants")
    for bits in (4, 8):
        convert(str(tiny_llama_dir), str(root / f"tiny-q{bits}"), quantize=True, q_bits=bits, q_group_size=64)
    return inspect_model(tiny_llama_dir), inspect_model(root / "tiny-q4"), inspect_model(root / "tiny-q8")


def test_eight_bit_is_closer_to_the_source_than_four_bit(family):
    src, q4, q8 = family
    events = []
    report = evaluate([q4, q8], src, progress=events.append, **FAST)
    ref, r4, r8 = report.rows
    assert ref.is_reference and (ref.mean_kl, ref.top1) == (0.0, 1.0)
    assert 0 < r8.mean_kl < r4.mean_kl
    assert r8.p99_kl < r4.p99_kl
    assert r8.top1 > r4.top1
    assert r4.bpw < r8.bpw < ref.bpw
    assert r4.size_bytes < r8.size_bytes < ref.size_bytes
    assert all(r.n_tokens == report.settings.n_tokens > 900 for r in report.rows)
    assert all(len(r.retrieval_cases) == 1 and r.retrieval in (0.0, 1.0) for r in report.rows)
    assert [e.row.name for e in events if isinstance(e, ModelEvaluated)] == [src.name, q4.name, q8.name]
    steps = [e for e in events if isinstance(e, Progress) and e.stage == "eval"]
    assert steps[-1].done == steps[-1].total


def test_without_reference_only_perplexity(family):
    _src, q4, _q8 = family
    report = evaluate([q4], None, retrieval=False, **FAST)
    (row,) = report.rows
    assert row.mean_kl is None and row.top1 is None and row.retrieval is None
    assert row.ppl > 1


def test_reference_cache_on_disk_gives_the_same_figures(family, monkeypatch):
    src, q4, _q8 = family
    in_memory = evaluate([q4], src, retrieval=False, **FAST)
    monkeypatch.setattr(quality, "REF_CACHE_MEMORY_BYTES", 0)
    on_disk = evaluate([q4], src, retrieval=False, **FAST)
    assert on_disk.rows[1].mean_kl == pytest.approx(in_memory.rows[1].mean_kl, rel=1e-6)
    assert not list(paths().cache.glob("eval-ref.*"))  # spilled files removed


def test_tokenizer_mismatch_is_a_clear_error(family, tmp_path):
    src, _q4, _q8 = family
    other = tmp_path / "other-tokenizer"
    shutil.copytree(src.path, other)
    build_tokenizer(other, 300, CHATML_TEMPLATE)
    with pytest.raises(OptiqError, match="do not share a tokenizer"):
        evaluate([inspect_model(other)], src, **FAST)


def test_cancel_between_sequences_cleans_up(family, monkeypatch):
    src, q4, _q8 = family
    monkeypatch.setattr(quality, "REF_CACHE_MEMORY_BYTES", 0)
    cancel = threading.Event()

    def progress(event):
        if isinstance(event, Progress) and event.stage == "eval" and event.done >= 2:
            cancel.set()

    with pytest.raises(Cancelled):
        evaluate([q4], src, progress=progress, cancel=cancel, **FAST)
    assert not list(paths().cache.glob("eval-ref.*"))


def test_reference_found_from_optiq_provenance(family, tmp_path):
    src, q4, _q8 = family
    quant = tmp_path / "tiny-optiq"
    shutil.copytree(q4.path, quant)
    # As the quantizer writes it: the source's name and folder.
    (quant / "optiq_quant.json").write_text(json.dumps({"source_model": src.name, "source_path": str(src.path)}))
    found = find_reference([inspect_model(quant)])
    assert found is not None and found.path.resolve() == src.path.resolve()
    found = find_reference([inspect_model(quant), src])  # the source among the models wins
    assert found is src
    assert find_reference([q4]) is None  # a plain mlx-lm quant names no source

    from optiq_tui.eval.compare import related

    assert related(inspect_model(quant), src) and related(src, inspect_model(quant))
    assert not related(q4, src)



def test_a_copied_library_relates_a_quant_to_its_own_copy_of_the_source(family, optiq_home, tmp_path):
    # The quant records the old home's source folder, which still exists: the library's copy wins.
    from optiq_tui.eval.compare import related
    from optiq_tui.library.provenance import source_path

    src, q4, _q8 = family
    old_source = tmp_path / "old-home" / "models" / "tiny-src"
    shutil.copytree(src.path, old_source)
    source = inspect_model(shutil.copytree(src.path, optiq_home / "models" / "tiny-src"))
    quant = shutil.copytree(q4.path, optiq_home / "models" / "tiny-src-optiq")
    (quant / "optiq_quant.json").write_text(json.dumps({"source_model": "tiny-src", "source_path": str(old_source)}))
    assert source_path(inspect_model(quant)) == source.path.resolve()
    assert related(inspect_model(quant), source)

@pytest.mark.demo
def test_demo_model_against_its_uniform_4bit(demo_model_dir, tmp_path):
    from mlx_lm import convert

    q4 = tmp_path / "demo-q4"
    convert(str(demo_model_dir), str(q4), quantize=True, q_bits=4, q_group_size=64)
    report = evaluate([inspect_model(q4)], inspect_model(demo_model_dir), retrieval=False, max_tokens=1024)
    ref, row = report.rows
    assert ref.ppl < 100  # a real model predicts real text
    assert 0.01 < row.mean_kl < 1.0 and row.p99_kl > row.mean_kl
    assert 0.6 < row.top1 < 1.0
    assert row.ppl > ref.ppl * 0.95


def test_receipts_interval_ppl_ratio_and_flips(family, tmp_path):
    from tests.tiny import build_parrot

    src, _q4, q8 = family
    # Same tokenizer; it answers "Paris" to every prompt, right only about France.
    other = inspect_model(build_parrot(tmp_path / "tiny-parrot"))
    report = evaluate([q8, other], src, retrieval=False, **FAST)
    ref, r8, ro = report.rows
    assert (ref.flips, ref.ppl_ratio, ref.flipped) == (0, 1.0, ())
    for row in (r8, ro):
        assert row.kl_low <= row.mean_kl <= row.kl_high
        assert row.ppl_ratio == pytest.approx(row.ppl / ref.ppl)
        assert row.flip_prompts == 20 and row.flips == len(row.flipped)
    assert ro.mean_kl > r8.mean_kl and ro.flips == 1
    prompt, ref_answer, answer = ro.flipped[0]
    assert prompt == flip_prompts()[0] and answer == "Paris" and ref_answer != answer
    assert report.settings.flips and report.settings.flip_tokens > 0


def test_no_flips_without_reference_or_when_skipped(family):
    src, q4, _q8 = family
    skipped = evaluate([q4], src, retrieval=False, flips=False, **FAST)
    assert skipped.rows[1].flips is None and not skipped.settings.flips
    assert skipped.rows[1].kl_low is not None  # the interval does not depend on flips
    alone = evaluate([q4], None, retrieval=False, **FAST)
    assert alone.rows[0].flips is None and alone.rows[0].ppl_ratio is None


def test_cancel_between_flip_prompts(family):
    src, q4, _q8 = family
    cancel = threading.Event()
    seen = []

    def progress(event):
        if isinstance(event, Progress) and "flip prompt 2/" in event.message:
            seen.append(event.message)
            cancel.set()

    with pytest.raises(Cancelled):
        evaluate([q4], src, retrieval=False, progress=progress, cancel=cancel, **FAST)
    assert seen == [f"{src.name}: flip prompt 2/20"]  # stopped before the third prompt
