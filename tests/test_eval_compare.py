"""A/B engine: same prompt, seed and sampler on both sides; turn-taking when both do not fit; votes."""

from __future__ import annotations

import threading

import pytest

from optiq_tui.engine.events import AnswerDelta, Finished
from optiq_tui.engine.session import SamplerSettings
from optiq_tui.eval.compare import (
    CompareSession,
    MemoryPlan,
    SideEvent,
    plan_memory,
    related,
    run_compare,
)
from optiq_tui.eval.votes import load_tally, record_vote
from optiq_tui.library.catalog import inspect_model

SAMPLER = SamplerSettings(temperature=0.8, top_p=1.0, max_tokens=12, seed=7)


@pytest.fixture(scope="module")
def pair(tiny_llama_dir, tmp_path_factory):
    from mlx_lm import convert

    root = tmp_path_factory.mktemp("cmp")
    convert(str(tiny_llama_dir), str(root / "tiny-q4"), quantize=True, q_bits=4, q_group_size=64)
    return inspect_model(tiny_llama_dir), inspect_model(root / "tiny-q4")


def _run(session, prompt="What is 12 times 7?"):
    events = []
    loaded_counts = []

    def progress(event):
        events.append(event)
        loaded_counts.append(len({id(m) for m in session._loaded.values()}))

    result = session.ask(prompt, SAMPLER, progress=progress)
    return result, events, loaded_counts


def _text(events, side):
    return "".join(e.event.text for e in events if isinstance(e, SideEvent) and e.side == side and isinstance(e.event, AnswerDelta))


def test_same_model_same_seed_gives_identical_answers_and_zero_kl(pair):
    src, _q4 = pair
    session = CompareSession(src, src, "Be brief.")
    result, events, _ = _run(session)
    assert result.answer_a == result.answer_b == _text(events, "a") == _text(events, "b")
    assert result.agreement.identical
    assert result.related
    assert result.kl_a_under_b.mean == pytest.approx(0.0, abs=1e-6)
    ends = [i for i, e in enumerate(events) if isinstance(e, SideEvent) and isinstance(e.event, Finished)]
    assert sorted(events[i].side for i in ends) == ["a", "b"]
    # Both loaded: the sides interleave, so each has text before either finishes.
    for side in ("a", "b"):
        first = next(i for i, e in enumerate(events) if isinstance(e, SideEvent) and e.side == side
                     and type(e.event).__name__ == "AnswerDelta")
        assert first < min(ends)
    session.close()


def test_turn_taking_matches_both_loaded_and_never_holds_two_models(pair):
    src, q4 = pair
    assert plan_memory(src, q4).both_loaded  # tiny models fit
    both = CompareSession(src, q4, "Be brief.", measure_kl=True)
    r_both, _, counts_both = _run(both)
    both.close()

    plan = MemoryPlan(both_loaded=False, need_a=1, need_b=1, available=1, source="test")
    one_at_a_time = CompareSession(src, q4, "Be brief.", plan=plan, measure_kl=True)
    r_seq, events, counts = _run(one_at_a_time)
    assert max(counts) == 1 and max(counts_both) == 2
    assert (r_seq.answer_a, r_seq.answer_b) == (r_both.answer_a, r_both.answer_b)
    assert "one after the other" in plan.describe()
    loads = [e.event.message for e in events if isinstance(e, SideEvent) and type(e.event).__name__ == "Log"]
    assert loads == [f"loading {src.name}", f"loading {q4.name}", f"loading {src.name}"]
    assert r_seq.kl_a_under_b.mean == pytest.approx(r_both.kl_a_under_b.mean, rel=1e-5)
    assert r_seq.kl_b_under_a.mean == pytest.approx(r_both.kl_b_under_a.mean, rel=1e-5)
    assert r_both.kl_a_under_b.mean > 0

    # A follow-up continues both conversations, even across reloads.
    r2, _, _ = _run(one_at_a_time, "And 3 times 4?")
    assert one_at_a_time.history["a"][0] == ("What is 12 times 7?", r_seq.answer_a)
    assert one_at_a_time.history["b"][1] == ("And 3 times 4?", r2.answer_b)
    replayed = one_at_a_time._session("a", lambda _e: None, None)  # rebuilt after the reload
    assert [t.user for t in replayed.turns] == ["What is 12 times 7?", "And 3 times 4?"]
    one_at_a_time.close()


def test_cancel_stops_both_sides_and_skips_the_figures(pair):
    src, q4 = pair
    session = CompareSession(src, q4)
    cancel = threading.Event()

    def progress(event):
        if isinstance(event, SideEvent) and isinstance(event.event, AnswerDelta):
            cancel.set()

    result = session.ask("Hello", SAMPLER, progress=progress, cancel=cancel)
    assert result.finished_a.reason in ("cancelled", "stop", "length")
    assert result.finished_b.reason in ("cancelled", "stop", "length")
    assert "cancelled" in (result.finished_a.reason, result.finished_b.reason)
    assert result.agreement is None and result.kl_a_under_b is None
    session.close()


def test_run_compare_and_relatedness(pair, tmp_path):
    src, q4 = pair
    plan, result = run_compare(src, q4, "Paris is", sampler=SAMPLER)
    assert result.finished_a is not None and result.finished_b is not None
    assert not related(src, q4)  # a plain mlx-lm quant names no source
    assert result.kl_a_under_b is None


def test_votes_map_back_to_real_models_whatever_the_placement(pair):
    src, q4 = pair
    record_vote(src, q4, "left")  # src was on the left
    record_vote(q4, src, "left")  # q4 was on the left
    record_vote(q4, src, "right")  # src on the right
    record_vote(src, q4, "tie")
    tally = record_vote(q4, src, "both-bad")
    assert tally.wins == {src.name: 2, q4.name: 1}
    assert (tally.tie, tally.both_bad, tally.total) == (1, 1, 5)
    assert load_tally(src, q4) == load_tally(q4, src) == tally
    with pytest.raises(ValueError):
        record_vote(src, q4, "maybe")
