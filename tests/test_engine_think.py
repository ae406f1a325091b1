"""The <think> splitter on recorded streams, cut at every possible place."""

from __future__ import annotations

import pytest

from optiq_tui.engine.events import AnswerDelta, ReasoningDelta
from optiq_tui.engine.think import ThinkSplitter

# Text as Qwen3 / DeepSeek-R1 models stream it.
QWEN3_STREAM = "<think>\nThe user greets me. I should greet back.\n</think>\n\nHello! How can I help?"
R1_PREOPENED = "Okay, 12*7 = 84.\n</think>\n\nThe answer is **84**."


def run(pieces: list[str], in_reasoning: bool = False) -> tuple[str, str]:
    splitter = ThinkSplitter(in_reasoning)
    events = []
    for piece in pieces:
        events += splitter.feed(0, piece)
    events += splitter.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return reasoning, answer


def test_whole_stream_splits_reasoning_from_answer():
    reasoning, answer = run([QWEN3_STREAM])
    assert reasoning == "The user greets me. I should greet back.\n"
    assert answer == "Hello! How can I help?"


@pytest.mark.parametrize("cut", range(1, len(QWEN3_STREAM)))
def test_every_split_position_gives_the_same_result(cut):
    assert run([QWEN3_STREAM[:cut], QWEN3_STREAM[cut:]]) == run([QWEN3_STREAM])


def test_character_by_character_stream():
    assert run(list(QWEN3_STREAM)) == run([QWEN3_STREAM])


def test_tags_split_across_tokens_as_a_bpe_tokenizer_would():
    pieces = ["<", "th", "ink", ">", "plan", " it", "</", "thi", "nk", ">", "\n\n", "Done", "."]
    assert run(pieces) == ("plan it", "Done.")


def test_prompt_opened_block_holds_only_the_closing_tag():
    reasoning, answer = run(list(R1_PREOPENED), in_reasoning=True)
    assert reasoning == "Okay, 12*7 = 84.\n"
    assert answer == "The answer is **84**."


def test_closing_tag_without_opening_one_is_not_shown_as_answer():
    # A template opened the block but we were not told: the text before the tag
    # was already streamed as answer, but the tag itself never reaches the user.
    _reasoning, answer = run([R1_PREOPENED])
    assert "</think>" not in answer
    assert answer.endswith("The answer is **84**.")


def test_answer_without_any_think_block_passes_through():
    assert run(["Just ", "an answer", " <b>bold</b> < 3"]) == ("", "Just an answer <b>bold</b> < 3")


def test_text_that_only_looks_like_a_tag_start_is_released():
    assert run(["a <th", "ing>"]) == ("", "a <thing>")


def test_stream_truncated_inside_reasoning_keeps_the_reasoning():
    assert run(["<think>still thinking about it"]) == ("still thinking about it", "")


def test_stream_truncated_in_the_middle_of_a_closing_tag():
    reasoning, answer = run(["<think>almost done</thi"])
    assert reasoning == "almost done</thi"
    assert answer == ""


def test_empty_think_block_from_a_thinking_off_template():
    assert run(["<think>\n\n</think>\n\n", "Hi there"]) == ("", "Hi there")


def test_deltas_are_typed_and_ordered():
    splitter = ThinkSplitter()
    events = splitter.feed(0, "<think>r</think>a")
    assert events == [ReasoningDelta("r"), AnswerDelta("a")]
