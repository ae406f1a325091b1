"""Receipts: mean KL with a 95% interval over sequences, and greedy-answer flips."""

from __future__ import annotations

import math

import mlx.core as mx
import pytest

from optiq_tui.measures.flips import compare_answers, count_flips, flip_prompts, is_right, normalize
from optiq_tui.measures.metrics import kl_interval
from optiq_tui.measures.receipts import receipts_line


def test_interval_brackets_the_token_weighted_mean_and_is_deterministic():
    seqs = [mx.array([0.1, 0.2, 0.3]), mx.array([0.5] * 5), mx.array([0.05, 0.15])]
    ci = kl_interval(seqs)
    assert ci.mean == pytest.approx((0.6 + 2.5 + 0.2) / 10)
    assert ci.low <= ci.mean <= ci.high and ci.sequences == 3
    assert kl_interval(seqs) == ci
    assert "bootstrap over sequences" in ci.method


def test_interval_narrows_when_sequences_agree():
    mx.random.seed(0)
    noisy = [mx.random.uniform(shape=(50,)) * (1 + 4 * (i % 2)) for i in range(12)]
    steady = [mx.random.uniform(shape=(50,)) for _ in range(12)]
    a, b = kl_interval(noisy), kl_interval(steady)
    assert (b.high - b.low) < (a.high - a.low)


def test_one_sequence_has_no_interval():
    ci = kl_interval([mx.array([0.2, 0.4])])
    assert ci.mean == pytest.approx(0.3) and math.isnan(ci.low) and math.isnan(ci.high)
    assert "CI [—, —]" in receipts_line("m", ci)


FRANCE, JAPAN = flip_prompts()[:2]
COLORS = "List three primary colors."


def test_shipped_prompts_each_know_their_answer():
    prompts = flip_prompts()
    assert len(prompts) == 20 and len(set(prompts)) == 20
    assert all(is_right(p, "") is False for p in prompts)
    assert normalize("  Paris.\n") == normalize("paris")
    assert is_right(FRANCE, "The capital of France is Paris.") and is_right(FRANCE, "PARIS")
    assert not is_right(FRANCE, "Monaco") and not is_right(FRANCE, "Parisian")
    assert is_right(COLORS, "Red, blue and yellow.") and not is_right(COLORS, "Red and blue.")
    assert is_right("a prompt we did not ship", "Paris") is None


def test_a_flip_is_right_turned_wrong_or_wrong_turned_right():
    source = ["The capital of France is Paris.", "The capital of Japan is a topic."]
    cases = {  # the quant's two answers -> the prompts that flip
        ("Paris", "Kyoto"): (),  # reworded; wrong differently
        ("Monaco", "A topic that is debated."): (0,),
        ("Paris.", "Tokyo."): (1,),
        ("Monaco", "Tokyo"): (0, 1),
    }
    for answers, changed in cases.items():
        flips = compare_answers([FRANCE, JAPAN], source, answers)
        assert flips.changed == changed, answers
    # A prompt with no known answer flips on any change of its text.
    assert compare_answers(["say hi"], ["Hi!"], ["hi"]).changed == ()
    assert compare_answers(["say hi"], ["Hi!"], ["Hello"]).changed == (0,)


@pytest.fixture(scope="module")
def pair(tiny_llama_dir, tmp_path_factory):
    import mlx_lm

    from tests.tiny import build_parrot

    parrot = build_parrot(tmp_path_factory.mktemp("parrot") / "parrot")
    return mlx_lm.load(str(tiny_llama_dir)), mlx_lm.load(str(parrot))


def test_a_model_never_flips_against_itself(pair):
    source, _ = pair
    flips = count_flips(source, source, flip_prompts()[:3], max_tokens=6)
    assert flips.changed == () and flips.rate == 0.0
    assert flips.answers == flips.source_answers


def test_a_model_that_gets_one_answer_right_flips_once(pair):
    source, parrot = pair  # a random model; one that answers "Paris" to everything
    flips = count_flips(source, parrot, flip_prompts()[:3], max_tokens=6)
    assert flips.answers == ("Paris",) * 3
    assert flips.changed == (0,) and flips.rate == 1 / 3
    line = receipts_line("other", kl_interval([mx.array([0.1, 0.3]), mx.array([0.2])]), flips)
    assert f"flips: {len(flips.changed)} of 3 greedy prompts" in line
