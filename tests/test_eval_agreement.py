"""Token agreement on hand-made lists; cross-KL on tiny models."""

from __future__ import annotations

import pytest

from optiq_tui.eval.agreement import Agreement, answer_logprobs, compare_tokens, cross_kl, kl_between


def test_identical_sequences():
    a = compare_tokens([1, 2, 3], [1, 2, 3])
    assert a == Agreement(3, None, None, None, 3, 3)
    assert a.identical


def test_first_difference_is_reported_with_both_tokens():
    a = compare_tokens([5, 6, 7, 8], [5, 6, 9, 8, 1])
    assert (a.common_prefix, a.first_diff, a.token_a, a.token_b) == (2, 2, 7, 9)
    assert not a.identical


def test_one_answer_is_a_prefix_of_the_other():
    a = compare_tokens([1, 2], [1, 2, 3])
    assert (a.common_prefix, a.first_diff, a.token_a, a.token_b) == (2, 2, None, 3)
    b = compare_tokens([], [4])
    assert (b.common_prefix, b.first_diff, b.token_a, b.token_b) == (0, 0, None, 4)


def test_differ_at_the_first_token():
    a = compare_tokens([1], [2])
    assert (a.common_prefix, a.first_diff, a.token_a, a.token_b) == (0, 0, 1, 2)


@pytest.fixture(scope="module")
def two_models(tiny_llama_dir, tmp_path_factory):
    from mlx_lm import load

    from tests.tiny import build_tiny_llama

    other = build_tiny_llama(tmp_path_factory.mktemp("other") / "tiny-other", seed=1)
    model_a, tok = load(str(tiny_llama_dir))
    model_b, _ = load(str(other))
    return model_a, model_b, tok


def test_cross_kl_of_a_model_with_itself_is_zero(two_models):
    model_a, model_b, tok = two_models
    prompt, answer = tok.encode("What is 12 times 7?"), tok.encode(" It is 84.")
    same = cross_kl(model_a, model_a, prompt, answer)
    assert same.n == len(answer)
    assert same.mean == pytest.approx(0.0, abs=1e-6)
    different = cross_kl(model_a, model_b, prompt, answer)
    assert different.mean > 1e-3


def test_cross_kl_from_stored_logprobs_equals_direct(two_models):
    model_a, model_b, tok = two_models
    prompt, answer = tok.encode("The quick brown fox"), tok.encode(" jumps over")
    a = answer_logprobs(model_a, prompt, answer)
    b = answer_logprobs(model_b, prompt, answer)
    assert a.shape[0] == len(answer)
    assert kl_between(a, b).mean == pytest.approx(cross_kl(model_a, model_b, prompt, answer).mean, rel=1e-5)
    with pytest.raises(ValueError, match="at least one answer token"):
        answer_logprobs(model_a, prompt, [])
