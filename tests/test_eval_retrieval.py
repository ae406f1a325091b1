"""The HashHop-style probe: generator structure, sizing, and the tolerant exact scorer."""

from __future__ import annotations

import re

import pytest

from optiq_tui.eval.retrieval import make_probe, probe_plan, score


def _assignments(prompt: str) -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9]{6}) = ([A-Za-z0-9]{6})$", prompt, re.MULTILINE))


@pytest.mark.parametrize("hops", [1, 2, 4])
def test_chain_in_the_prompt_leads_from_start_to_answer(hops):
    probe = make_probe(hops, 600, seed=5)
    table = _assignments(probe.prompt)
    value = probe.start
    for _ in range(hops):
        value = table[value]
    assert value == probe.answer
    assert probe.answer not in table  # the chain ends there
    assert len(table) == 4 * hops  # the chain and three distractor chains
    assert probe.start in probe.prompt.rsplit("\n\n", 1)[-1]  # the question names the start


def test_same_seed_same_probe_other_seed_other_codes():
    assert make_probe(2, 400, seed=1) == make_probe(2, 400, seed=1)
    assert make_probe(2, 400, seed=2).chain != make_probe(2, 400, seed=1).chain


def test_prompt_is_sized_in_the_tokenizers_tokens(tiny_llama_dir):
    from mlx_lm.utils import load_tokenizer

    tok = load_tokenizer(tiny_llama_dir)
    for ctx in (600, 1200):
        probe = make_probe(2, ctx, seed=0, tokenizer=tok)
        n = len(tok.encode(probe.prompt, add_special_tokens=False))
        assert 0.9 * ctx <= n <= 1.02 * ctx


@pytest.fixture(scope="module")
def probe():
    return make_probe(2, 300, seed=11)


def test_perfect_answer_scores_one_wrong_answer_zero(probe):
    start, middle, answer = probe.chain
    distractor = sorted(probe.codes - set(probe.chain))[0]
    assert score(answer, probe) == 1.0
    assert score(distractor, probe) == 0.0
    assert score(middle, probe) == 0.0  # one hop short
    assert score(start, probe) == 0.0
    assert score("", probe) == 0.0
    assert score("I could not find it.", probe) == 0.0


@pytest.mark.parametrize(
    "template",
    [
        '"{c}"',
        "'{c}'.",
        "`{c}`",
        "**{c}**",
        "{c}.",
        "The answer is {c}!",
        "THE FINAL CODE IS {c}",
        "Final value: {c}\n",
        "{a} → {b} → {c}",
        "{a} -> {b} -> {c}",
        "{a} = {b}, and {b} = {c}, so the answer is {c}.",
        "Starting from {a} I end on {c}.",
    ],
)
def test_formats_a_person_would_accept(probe, template):
    a, b, c = probe.chain
    assert score(template.format(a=a, b=b, c=c), probe) == 1.0


@pytest.mark.parametrize(
    "template",
    [
        "{c} or {d}",  # two candidates
        "{a} → {b} → {d}",  # wrong chain end
        "{c}x",  # not the code, a longer word
        "{lower}",  # codes are case-sensitive
        "{c} (or maybe Zz12qq)",  # a made-up second candidate
    ],
)
def test_ambiguous_or_wrong_answers_score_zero(probe, template):
    a, b, c = probe.chain
    d = sorted(probe.codes - set(probe.chain))[0]
    assert score(template.format(a=a, b=b, c=c, d=d, lower=c.swapcase()), probe) == 0.0


def test_plan_skips_contexts_beyond_the_model():
    plan = probe_plan((512, 2048), (1, 2), trials=2, max_context=1024)
    assert {c for c, _h, _s in plan} == {512}
    assert len(plan) == 4
    assert len({s for _c, _h, s in plan}) == 4  # distinct seeds
