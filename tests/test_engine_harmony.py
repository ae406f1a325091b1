"""gpt-oss harmony: offline vocabulary, prompt rendering, recorded streams, a tiny real model."""

from __future__ import annotations

import pytest

from optiq_tui.engine.events import AnswerDelta, Finished, ReasoningDelta
from optiq_tui.engine.harmony import HarmonyParser, harmony_encoding, render_prompt, special_tokens
from tests.forcing import forcing

# Token ids a gpt-oss model streams for "<|channel|>analysis<|message|>User asks capital of
# France. Paris.<|end|><|start|>assistant<|channel|>final<|message|>The capital of France is
# Paris.<|return|>" (o200k_harmony ids).
RECORDED = [200005, 35644, 200008, 1844, 31064, 9029, 328, 10128, 13, 12650, 13, 200007, 200006,
            173781, 200005, 17196, 200008, 976, 9029, 328, 10128, 382, 12650, 13, 200002]


@pytest.fixture(scope="module")
def enc(tmp_path_factory):
    return harmony_encoding(tmp_path_factory.mktemp("tiktoken"))


def stream(enc, ids: list[int]) -> tuple[str, str]:
    parser = HarmonyParser(enc)
    events = []
    for token in ids:
        events += parser.feed(token)
    events += parser.finish()
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    return reasoning, answer


def ids(enc, text: str) -> list[int]:
    return enc.encode(text, allowed_special="all")


def test_special_tokens_have_their_real_ids(enc):
    specials = {t: i for i, t in special_tokens(enc).items()}
    assert specials["<|start|>"] == 200006
    assert specials["<|channel|>"] == 200005
    assert specials["<|message|>"] == 200008
    assert specials["<|end|>"] == 200007
    assert specials["<|return|>"] == 200002


def test_recorded_stream_splits_analysis_from_final(enc):
    assert stream(enc, RECORDED) == ("User asks capital of France. Paris.", "The capital of France is Paris.")


def test_commentary_and_unknown_channels_go_to_reasoning(enc):
    text = (
        "<|channel|>commentary<|message|>Let me check.<|end|>"
        "<|start|>assistant<|channel|>scratchpad<|message|> (notes)<|end|>"
        "<|start|>assistant<|channel|>final<|message|>Done.<|return|>"
    )
    assert stream(enc, ids(enc, text)) == ("Let me check. (notes)", "Done.")


def test_message_without_channel_is_the_answer(enc):
    assert stream(enc, ids(enc, "<|message|>Plain answer.<|return|>")) == ("", "Plain answer.")


def test_stream_truncated_inside_analysis_keeps_the_reasoning(enc):
    assert stream(enc, RECORDED[:8]) == ("User asks capital of France", "")


def test_stream_truncated_inside_a_header_is_shown_not_lost(enc):
    reasoning, answer = stream(enc, RECORDED[:12] + [200006, 173781, 200005])
    assert reasoning == "User asks capital of France. Paris."
    assert answer == "assistant"  # special tokens are not printed


def test_model_that_ignores_harmony_still_shows_its_text(enc):
    assert stream(enc, ids(enc, "Paris is the capital.")) == ("", "Paris is the capital.")


def test_text_without_a_header_that_ends_with_return_is_the_answer(enc):
    # The parser alone takes it for an unfinished header and drops it at <|return|>.
    assert stream(enc, ids(enc, "Sunny and warm.<|return|>")) == ("", "Sunny and warm.")


def test_text_after_end_without_start_falls_back_to_plain_text(enc):
    text = "<|channel|>final<|message|>Yes.<|end|> and more"
    assert stream(enc, ids(enc, text)) == ("", "Yes. and more")


def test_over_long_header_falls_back(enc):
    junk = ids(enc, "word " * 80)
    reasoning, answer = stream(enc, junk)
    assert reasoning == "" and answer.strip() == ("word " * 80).strip()


def test_fallback_decodes_characters_split_across_tokens(enc):
    # A rare character whose UTF-8 bytes span several tokens.
    char = next(c for c in "𓀀𝔘ꙮ𐍈" if len(ids(enc, c)) > 1)
    text = "no header " + char * 3
    assert stream(enc, ids(enc, text)) == ("", text)


def test_render_puts_effort_in_system_and_instructions_in_developer(enc):
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "2+2?"},
    ]
    text = enc.decode(render_prompt(enc, messages, "high", "Be terse."))
    assert "Reasoning: high" in text.split("<|end|>")[0]
    assert "<|start|>developer<|message|># Instructions\n\nBe terse.<|end|>" in text
    assert "<|start|>assistant<|channel|>final<|message|>Hello!<|end|>" in text
    assert text.endswith("<|start|>user<|message|>2+2?<|end|><|start|>assistant")


@pytest.fixture(scope="module")
def tiny_gpt_oss(tiny_gpt_oss_dir, tmp_path_factory):
    from tests.test_engine_session import load_isolated

    return load_isolated(tiny_gpt_oss_dir, tmp_path_factory)


def test_tiny_gpt_oss_loads_with_the_harmony_format(tiny_gpt_oss):
    fmt = tiny_gpt_oss.format
    assert fmt.kind == "harmony"
    assert fmt.efforts == ("low", "medium", "high")
    assert tiny_gpt_oss.model.args.vocab_size == 201088
    # Its tokenizer and openai-harmony agree on every id of a rendered prompt.
    prompt = fmt.render([{"role": "user", "content": "What is the capital of France?"}], "low")
    text = fmt.encoding.decode(prompt)
    assert tiny_gpt_oss.tokenizer.encode(text, add_special_tokens=False) == prompt
    assert {200002, 200012} <= set(tiny_gpt_oss.tokenizer.eos_token_ids)


def test_tiny_gpt_oss_streams_reasoning_and_answer_through_a_session(tiny_gpt_oss):
    from optiq_tui.engine.session import ChatSession, SamplerSettings

    session = ChatSession(tiny_gpt_oss, "Be brief.")
    events = list(
        session.generate(
            "What is the capital of France?",
            SamplerSettings(temperature=0.0, max_tokens=64),
            "low",
            logits_processors=[forcing(RECORDED)],
        )
    )
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert reasoning == "User asks capital of France. Paris."
    assert answer == "The capital of France is Paris."
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason == "stop"
    assert fin.stats.gen_tokens == len(RECORDED)
    assert fin.stats.reasoning_tokens == 8
    # The next prompt replays only the final answer, not the analysis.
    turn = session.turns[-1]
    assert turn.reasoning == reasoning
    next_prompt = tiny_gpt_oss.format.encoding.decode(session._render("And Germany?", "low"))
    assert "Paris." in next_prompt and "User asks" not in next_prompt


def test_tiny_gpt_oss_random_output_still_reaches_the_user(tiny_gpt_oss):
    from optiq_tui.engine.session import ChatSession, SamplerSettings

    events = list(ChatSession(tiny_gpt_oss).generate("Hi", SamplerSettings(temperature=0.0, max_tokens=12)))
    fin = events[-1]
    assert fin.reason == "length" and fin.stats.gen_tokens == 12
    assert any(isinstance(e, (AnswerDelta, ReasoningDelta)) and e.text for e in events)
