"""ChatSession on tiny llama / qwen3 models: streaming, stats, cancel, limits, formats, cache."""

from __future__ import annotations

import threading

import pytest

from optiq_tui.engine.events import AnswerDelta, Finished, ReasoningDelta, StatsUpdate
from optiq_tui.engine.session import ChatSession, ContextOverflow, SamplerSettings
from tests.forcing import forcing

GREEDY = SamplerSettings(temperature=0.0, max_tokens=16)


def load_isolated(folder, tmp_path_factory):
    """Load once per module, with the app folder in a temporary place (like every test)."""
    from optiq_tui.engine import loader

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OPTIQ_HOME", str(tmp_path_factory.mktemp("optiq-home")))
        return loader.load(folder)


@pytest.fixture(scope="module")
def llama(tiny_llama_dir, tmp_path_factory):
    return load_isolated(tiny_llama_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def qwen3(tiny_qwen3_dir, tmp_path_factory):
    return load_isolated(tiny_qwen3_dir, tmp_path_factory)


def answer_of(events) -> str:
    return "".join(e.text for e in events if isinstance(e, AnswerDelta))


def never_stop(loaded):
    """A logits processor that forbids the stop tokens, so the model runs to max_tokens."""
    import mlx.core as mx

    stops = sorted(loaded.tokenizer.eos_token_ids)

    def processor(_tokens, logits):
        mask = mx.zeros(logits.shape, dtype=logits.dtype)
        mask[..., stops] = -1e9
        return logits + mask

    return processor


def test_max_tokens_ends_with_length_and_fills_the_stats(llama):
    events = list(
        ChatSession(llama, "Be brief.").generate(
            "Hello", SamplerSettings(temperature=0.0, max_tokens=9), logits_processors=[never_stop(llama)]
        )
    )
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.reason == "length" and fin.error is None
    s = fin.stats
    assert s.gen_tokens == 9
    assert s.prompt_tokens > 5 and s.prompt_tps > 0 and s.gen_tps > 0
    assert s.ttft_s is not None and 0 < s.ttft_s <= s.elapsed_s
    assert s.mlx_active_bytes > 0 and s.mlx_peak_bytes >= s.mlx_active_bytes
    assert s.rss_bytes > 10 << 20
    assert isinstance(events[-2], StatsUpdate)


def test_cancel_mid_generation_stops_at_the_next_token(llama):
    cancel = threading.Event()
    session = ChatSession(llama)
    seen_after_cancel = 0
    events = []
    for event in session.generate(
        "Tell me a story",
        SamplerSettings(temperature=0.0, max_tokens=500),
        cancel=cancel,
        logits_processors=[never_stop(llama)],
    ):
        events.append(event)
        if cancel.is_set() and isinstance(event, AnswerDelta):
            seen_after_cancel += 1
        if sum(isinstance(e, AnswerDelta) for e in events) == 5:
            cancel.set()
    fin = events[-1]
    assert fin.reason == "cancelled"
    assert seen_after_cancel <= 1
    assert fin.stats.gen_tokens < 10


def test_cancel_from_another_thread_returns_promptly(llama):
    cancel = threading.Event()
    started = threading.Event()
    result = {}

    def consume():
        for event in ChatSession(llama).generate(
            "Go on", SamplerSettings(temperature=0.0, max_tokens=100_000), cancel=cancel,
            logits_processors=[never_stop(llama)],
        ):
            started.set()
            if isinstance(event, Finished):
                result["fin"] = event

    worker = threading.Thread(target=consume)
    worker.start()
    assert started.wait(60)
    cancel.set()
    worker.join(30)
    assert not worker.is_alive()
    assert result["fin"].reason == "cancelled"
    assert result["fin"].stats.gen_tokens < 100_000


def test_cancel_before_the_first_token(llama):
    cancel = threading.Event()
    cancel.set()
    events = list(ChatSession(llama).generate("Hi", GREEDY, cancel=cancel))
    assert events[-1].reason == "cancelled"
    assert events[-1].stats.gen_tokens == 0


def test_seed_makes_sampling_repeatable(llama):
    sampler = SamplerSettings(temperature=1.0, top_p=1.0, max_tokens=12, seed=7)
    first = answer_of(ChatSession(llama).generate("Pick words", sampler))
    second = answer_of(ChatSession(llama).generate("Pick words", sampler))
    assert first == second


def test_follow_up_with_the_kept_cache_matches_a_fresh_session(llama):
    session = ChatSession(llama, "Be brief.")
    list(session.generate("What is 12 times 7?", GREEDY))
    follow_up = list(session.generate("And 3 times 4?", GREEDY))
    assert follow_up[-1].stats.prompt_tokens < len(session._render("x", None))  # only the new part

    fresh = ChatSession(llama, "Be brief.")
    fresh.turns = [session.turns[0]]
    assert answer_of(fresh.generate("And 3 times 4?", GREEDY)) == answer_of(follow_up)


def test_history_replay_pop_and_reset(llama):
    session = ChatSession(llama, "sys")
    session.add_message("user", "one")
    session.add_message("assistant", "first answer")
    session.add_message("user", "two")
    session.add_message("assistant", "second answer")
    assert [m["role"] for m in session.messages("three")] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert session.pop_turn().user == "two"
    session.reset()
    assert session.messages() == [{"role": "system", "content": "sys"}]


def test_a_turn_without_answer_is_kept_but_not_replayed(llama):
    session = ChatSession(llama)
    cancel = threading.Event()
    cancel.set()
    list(session.generate("unanswered", GREEDY, cancel=cancel))
    assert [t.user for t in session.turns] == ["unanswered"]
    assert session.messages("next") == [{"role": "user", "content": "next"}]


def test_context_overflow_is_raised_before_generating_and_old_turns_can_go(llama):
    import dataclasses

    session = ChatSession(llama)
    for i in range(6):
        session.add_message("user", f"question {i} " + "word " * 20)
        session.add_message("assistant", f"answer {i} " + "word " * 20)
    # A context that fits the conversation once its 3 oldest turns are gone.
    context = len(session._render("one more", None, skip=3)) + 64
    session.loaded = dataclasses.replace(llama, context_length=context)
    with pytest.raises(ContextOverflow) as info:
        next(session.generate("one more", SamplerSettings(temperature=0.0, max_tokens=64)))
    assert info.value.context_length == context and info.value.droppable_turns == 6
    assert "Drop the oldest turns" in str(info.value)
    assert len(session.turns) == 6  # unchanged
    assert session.drop_oldest_turns() == 3
    assert session.turns[0].user.startswith("question 3")
    events = list(session.generate("one more", SamplerSettings(temperature=0.0, max_tokens=64)))
    assert events[-1].reason in ("stop", "length")
    assert events[-1].stats.gen_tokens <= 64


def test_template_without_reasoning_control_says_why(llama):
    fmt = llama.format
    assert fmt.kind == "template" and fmt.efforts is None
    assert "no reasoning control" in fmt.effort_unavailable_reason


def test_qwen3_effort_switches_thinking_in_the_template(qwen3):
    fmt = qwen3.format
    assert fmt.kind == "think" and fmt.efforts == ("on", "off")
    messages = [{"role": "user", "content": "Hi"}]
    off = qwen3.tokenizer.decode(fmt.render(messages, "off"))
    on = qwen3.tokenizer.decode(fmt.render(messages, "on"))
    assert off.endswith("<think>\n\n</think>\n\n") and "<think>" not in on
    assert fmt.normalize_effort("high") == "on" and fmt.normalize_effort("low") == "off"


def test_qwen3_reasoning_is_split_out_of_the_stream(qwen3):
    events = list(
        ChatSession(qwen3).generate(
            "12 times 7?", SamplerSettings(temperature=0.0, max_tokens=64), "on",
            logits_processors=[forced(qwen3, "<think>plan it</think>\n\nThe answer is 84.<|im_end|>")],
        )
    )
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert reasoning == "plan it"
    assert answer_of(events) == "The answer is 84."
    assert events[-1].reason == "stop"
    assert events[-1].stats.reasoning_tokens >= 2


def with_template(source, target, template):
    """A copy of a tiny model folder with another chat template (None: no template)."""
    import json
    import shutil

    shutil.copytree(source, target)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    if template is not None:
        config["chat_template"] = template
    config_path.write_text(json.dumps(config))
    return target


# DeepSeek-R1 style: the generation prompt opens the think block itself.
R1_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n<think>\\n' }}{% endif %}"
)


def forced(loaded, text):
    return forcing(loaded.tokenizer.encode(text, add_special_tokens=False))


def test_template_that_opens_the_think_block_in_the_prompt(tiny_qwen3_dir, tmp_path):
    from optiq_tui.engine import loader

    loaded = loader.load(with_template(tiny_qwen3_dir, tmp_path / "r1", R1_TEMPLATE))
    fmt = loaded.format
    assert fmt.kind == "think" and fmt.efforts is None
    assert "always reasons" in fmt.effort_unavailable_reason
    events = list(
        ChatSession(loaded).generate(
            "12 times 7?", SamplerSettings(temperature=0.0, max_tokens=64),
            logits_processors=[forced(loaded, "12*7 is 84.</think>\n\nIt is 84.<|im_end|>")],
        )
    )
    assert "".join(e.text for e in events if isinstance(e, ReasoningDelta)) == "12*7 is 84."
    assert answer_of(events) == "It is 84."


def test_model_without_chat_template_continues_plain_text(tiny_llama_dir, tmp_path):
    from optiq_tui.engine import loader

    loaded = loader.load(with_template(tiny_llama_dir, tmp_path / "base", None))
    fmt = loaded.format
    assert fmt.kind == "none" and fmt.efforts is None and "no chat template" in fmt.effort_unavailable_reason
    prompt = fmt.render([{"role": "user", "content": "The quick brown fox"}])
    assert loaded.tokenizer.decode(prompt) == "The quick brown fox"
    events = list(ChatSession(loaded).generate("The quick brown fox", SamplerSettings(temperature=0.0, max_tokens=4)))
    assert events[-1].reason in ("stop", "length")
