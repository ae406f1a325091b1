"""Calibration mixes: held-out chat text, and the source's own answers as calibration."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from optiq_tui.measures.texts import heldout_chat_tokens, render_chat
from optiq_tui.quant.calibration import build_calibration, shipped_documents
from optiq_tui.quant.self_answers import prompts_of, self_answer_documents


def _user_turns(documents):
    return {m["content"] for d in documents for m in d.get("messages", []) if m["role"] == "user"}


def test_heldout_chat_never_repeats_a_calibration_turn():
    raw = resources.files("optiq_tui.data").joinpath("heldout_chat.json").read_text()
    held = json.loads(raw)["conversations"]
    assert len(held) >= 8
    assert not _user_turns(held) & _user_turns(shipped_documents())


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    import mlx_lm

    return mlx_lm.load(str(tiny_llama_dir))


def test_heldout_chat_is_rendered_in_the_models_template(tiny):
    _, tok = tiny
    assert tok.chat_template  # the fixture has one: the rendering below is the template's
    seqs = heldout_chat_tokens(tok, max_tokens=10**6, seq_len=128)
    first = json.loads(resources.files("optiq_tui.data").joinpath("heldout_chat.json")
                       .read_text())["conversations"][0]["messages"]
    rendered = render_chat(first, tok)
    assert rendered != tok.encode("\n".join(m["content"] for m in first), add_special_tokens=False)
    flat = [t for s in seqs for t in (s[1:] if tok.bos_token_id is not None else s)]
    assert flat[: len(rendered)] == rendered
    assert all(len(s) <= 128 for s in seqs)


def test_prompts_stop_at_the_first_user_turn_and_keep_the_system_message():
    docs = [d for d in shipped_documents() if "messages" in d]
    before = json.dumps(docs)
    prompts = prompts_of(docs)
    assert len(prompts) == len(docs)
    for doc, prompt in zip(docs, prompts):
        assert prompt[-1]["role"] == "user" and [m["role"] for m in prompt].count("user") == 1
        assert prompt == doc["messages"][: len(prompt)]
    assert json.dumps(docs) == before  # the shipped documents are not changed


def test_self_answers_are_the_models_greedy_replies(tiny):
    from optiq_tui.measures.flips import greedy_answers

    model, tok = tiny
    docs = [d for d in shipped_documents() if "messages" in d][:3]
    own = self_answer_documents(model, tok, docs, max_tokens=6)
    expected = greedy_answers(model, tok, prompts_of(docs), 6)
    assert [d["messages"][-1]["content"] for d in own] == [a for a in expected if a.strip()]
    assert all(d["messages"][-1]["role"] == "assistant" for d in own)
    cal = build_calibration(tok, documents=own, n_sequences=10**6, seq_len=64, held_back=0)
    assert cal.n_tokens > 0
    assert cal.digest != build_calibration(tok, n_sequences=10**6, seq_len=64, held_back=0).digest


def test_a_quantize_config_can_add_the_sources_answers_once(tiny, tiny_llama_dir, tmp_path, monkeypatch):
    from optiq_tui.quant.calibration import calibration_for
    from optiq_tui.quant.config import QuantConfig

    monkeypatch.setenv("OPTIQ_HOME", str(tmp_path))
    model, tok = tiny
    config = QuantConfig(self_answers=True, n_calibration=400, seq_len=64)
    events = []
    first = calibration_for(tok, config, model=model, source=tiny_llama_dir, progress=events.append)
    assert "own answers" in first.source and events
    events.clear()
    again = calibration_for(tok, config, model=model, source=tiny_llama_dir, progress=events.append)
    assert again.digest == first.digest and not events  # answered once, then read from the cache
    plain = calibration_for(tok, QuantConfig(n_calibration=400, seq_len=64), model=model, source=tiny_llama_dir)
    assert plain.source == "shipped" and plain.digest != first.digest
