"""The compare screen through Pilot on two real tiny models: side by side, blind vote, turn-taking."""

from __future__ import annotations

import random
import shutil
import threading

import pytest

from optiq_tui.library.catalog import inspect_model
from optiq_tui.ui.app import OptiqApp
from optiq_tui.ui.screens.compare import CompareScreen, first_difference
from optiq_tui.ui.widgets.chat_message import ChatMessage
from optiq_tui.ui.widgets.vote_bar import VoteBar
from tests.engine_proc import assert_on
from tests.tiny import build_tiny_llama
from tests.ui_util import screen_text, wait_until


@pytest.fixture(scope="module")
def pair(tiny_llama_dir, tmp_path_factory):
    """The tiny llama and a second tiny llama (other random weights, same tokenizer)."""
    other = build_tiny_llama(tmp_path_factory.mktemp("pair") / "tiny-llama-b", seed=1)
    return inspect_model(tiny_llama_dir), inspect_model(other)


# Screen tests without the engine_kind fixture run in-process only: they patch the in-process
# engine's internals (loader.available_memory, ChatSession.generate, CompareSession.prepare)
# or read its compare session.


def settle(app: OptiqApp, max_tokens: int = 8) -> None:
    app.settings.max_tokens = max_tokens
    app.settings.seed = 0
    app.settings.temperature = 0.0


def messages(column) -> list[ChatMessage]:
    return list(column.query(ChatMessage))


def answered(screen: CompareScreen, turns: int) -> bool:
    """Both columns hold ``turns`` finished answers and the turn is over."""
    return not screen.running and all(
        len([m for m in messages(c) if m.role == "assistant" and m.finish_reason]) == turns for c in screen.columns
    )


async def ask(pilot, screen: CompareScreen, text: str) -> None:
    await wait_until(pilot, lambda: screen.ready, 60, "both models to be ready")
    turns = len([m for m in messages(screen.columns[0]) if m.role == "user"]) + 1
    screen.query_one("#cmp-prompt").focus()
    await pilot.press(*text, "enter")
    await wait_until(pilot, lambda: answered(screen, turns), 120, "both answers")


async def test_two_models_answer_side_by_side(pair, engine_kind):
    a, b = pair
    app = OptiqApp()
    async with app.run_test(size=(120, 36)) as pilot:
        settle(app)
        screen = CompareScreen(a, b)
        await app.push_screen(screen)
        await ask(pilot, screen, "Hello")
        assert screen.plan["both_loaded"]
        assert "both models stay loaded" in str(screen.query_one("#cmp-mode").render())
        left, right = screen.columns
        assert "A: tiny-llama" in str(left.query_one(".column-title").render())
        for column in (left, right):
            user, answer = messages(column)
            assert user.answer_text == "Hello" and answer.finish_reason in ("stop", "length")
            assert column.stats.stats is not None and column.stats.stats.gen_tokens > 0
        result = screen.result
        assert result["a"]["answer"] == messages(left)[1].answer_text
        assert result["agreement"] is not None
        line = str(screen.query_one("#agreement").render())
        assert ("Identical" in line) or (f"Same first {result['agreement']['common_prefix']} tokens" in line)
        assert "No cross-KL" in line  # two unrelated random models
        assert_on(app, engine_kind)


async def test_blind_vote_is_recorded_and_revealed(pair, engine_kind):
    from optiq_tui.eval.votes import load_tally

    a, b = pair
    app = OptiqApp()
    async with app.run_test(size=(120, 36)) as pilot:
        settle(app)
        screen = CompareScreen(a, b, blind=True, seed=3)
        await app.push_screen(screen)
        await wait_until(pilot, lambda: screen.ready, 60, "both models")
        titles = [str(c.query_one(".column-title").render()) for c in screen.columns]
        assert titles == ["Left", "Right"]
        await ask(pilot, screen, "Which is better?")
        vote = screen.query_one(VoteBar)
        assert vote.display and app.focused is vote
        # Before the vote, nothing on screen names the models.
        assert a.name not in str(screen.query_one("#agreement").render())
        await pilot.press("l")
        left_model = (a, b)[screen.order[0]]
        tally = load_tally(a, b)
        assert tally.wins[left_model.name] == 1 and tally.total == 1
        assert screen.voted == "left" and not vote.display
        assert left_model.name in str(screen.columns[0].query_one(".column-title").render())
        assert "(1 vote)" in str(screen.query_one("#tally").render())
        assert_on(app, engine_kind)


async def test_models_that_cannot_both_be_loaded_take_turns(pair, monkeypatch):
    from optiq_tui.engine import loader

    a, b = pair
    # Room for either model, not both: the real plan_memory decides, from the loader's estimates.
    room = max(loader.estimate_memory(a), loader.estimate_memory(b)) + 1
    monkeypatch.setattr(loader, "available_memory", lambda: (room, "test limit"))
    app = OptiqApp()
    async with app.run_test(size=(120, 36)) as pilot:
        settle(app, max_tokens=6)
        screen = CompareScreen(a, b)
        await app.push_screen(screen)
        await ask(pilot, screen, "First")
        assert not screen.plan["both_loaded"]
        assert "one after the other" in str(screen.query_one("#cmp-mode").render())
        await ask(pilot, screen, "Second")
        for column in screen.columns:
            texts = [m.answer_text for m in messages(column) if m.role == "user"]
            assert texts == ["First", "Second"]
            assert all(m.finish_reason in ("stop", "length") for m in messages(column) if m.role == "assistant")
        pair = app.engine.client.service.ctx.compare  # the in-process engine's
        assert [u for u, _ in pair.history["a"]] == ["First", "Second"]
        assert [u for u, _ in pair.history["b"]] == ["First", "Second"]


async def test_blind_columns_stream_together_and_hide_speed(pair, monkeypatch):
    """Both columns get text before either answer ends: the first to finish waits at a gate."""
    from optiq_tui.engine.events import Finished
    from optiq_tui.engine.session import ChatSession

    gate = threading.Event()
    generate = ChatSession.generate

    def gated(self, *args, **kwargs):
        for event in generate(self, *args, **kwargs):
            if isinstance(event, Finished):
                gate.wait(60)
            yield event

    monkeypatch.setattr(ChatSession, "generate", gated)
    a, b = pair
    app = OptiqApp()
    try:
        async with app.run_test(size=(120, 36)) as pilot:
            settle(app)
            screen = CompareScreen(a, b, blind=True, seed=3)
            await app.push_screen(screen)
            await wait_until(pilot, lambda: screen.ready, 60, "both models")
            screen.query_one("#cmp-prompt").focus()
            await pilot.press(*"Hello", "enter")
            await wait_until(
                pilot,
                lambda: all(c.current is not None and c.current.answer_text for c in screen.columns),
                60,
                "text in both columns",
            )
            assert all(c.current.streaming for c in screen.columns)
            assert "waiting for the other" not in screen_text(app)
            gate.set()
            await wait_until(pilot, lambda: answered(screen, 1), 60, "both answers")
            before = screen_text(app)
            assert "tok/s" not in before and "/s" not in before and "TTFT" not in before
            await pilot.press("t")
            assert all(c.stats.stats is not None for c in screen.columns)
            assert "TTFT" in screen_text(app)
    finally:
        gate.set()


def _seed_with_order(left_first: bool) -> int:
    # CompareScreen puts A on the left when its Random(seed) draws below 0.5.
    return next(s for s in range(100) if (random.Random(s).random() < 0.5) == left_first)


async def test_blind_screen_before_the_vote_does_not_depend_on_which_model_is_left(
    tiny_llama_dir, tmp_path, monkeypatch
):
    from optiq_tui.engine import loader

    copies = []
    for name in ("model-x", "model-y"):
        shutil.copytree(tiny_llama_dir, tmp_path / name)
        copies.append(inspect_model(tmp_path / name))
    monkeypatch.setattr(loader, "available_memory", lambda: (64 * 1024**3, "test"))
    screens = []
    for left_first in (True, False):
        app = OptiqApp()
        async with app.run_test(size=(100, 30)) as pilot:
            settle(app)
            screen = CompareScreen(*copies, blind=True, seed=_seed_with_order(left_first))
            await app.push_screen(screen)
            await ask(pilot, screen, "Hello")
            assert screen.order == ([0, 1] if left_first else [1, 0])
            await wait_until(pilot, lambda: screen.query_one(VoteBar).display, 10, "the vote bar")
            await pilot.pause()
            screens.append(screen_text(app))
    assert "model-x" not in screens[0] and "model-y" not in screens[0]
    assert screens[0] == screens[1]


def test_first_difference_snippets():
    assert first_difference("The capital is Paris.", "The capital is Rome.") == ("Paris.", "Rome.")
    assert first_difference("same", "same and more") == ("(end)", "same and more")


def test_describe_turn_shows_agreement_and_cross_kl():
    from dataclasses import asdict

    from optiq_tui.eval.agreement import CrossKL, compare_tokens
    from optiq_tui.ui.screens.compare import describe_turn

    agreement = compare_tokens([1, 2, 3, 4], [1, 2, 3, 9, 5])
    # A compare job's result, as the engine gives it (engine/tasks.py compare).
    result = {
        "prompt": "Capital?",
        "a": {"answer": "The capital is Paris.", "finished": None},
        "b": {"answer": "The capital is Rome.", "finished": None},
        "agreement": {**asdict(agreement), "identical": agreement.identical},
        "kl_a_under_b": asdict(CrossKL(0.0123, 0.2, 4)),
        "kl_b_under_a": None,
        "related": True,
    }
    line = describe_turn(result, ("q4", "q8"))
    assert "Same first 3 tokens (of 4 / 5)" in line and "token 4" in line
    assert "q4 «Paris.» vs q8 «Rome.»" in line
    assert "KL(q4‖q8) on q4's answer 0.0123 (p99 0.2000)" in line


async def test_a_prompt_typed_while_the_models_reload_is_sent_when_ready(pair, monkeypatch):
    from optiq_tui.eval.compare import CompareSession

    gate = threading.Event()
    prepare = CompareSession.prepare
    calls: list[int] = []

    def held(self, **kwargs):
        # The second preparation (after ctrl+l) waits until the prompt has been typed.
        calls.append(1)
        if len(calls) == 2:
            gate.wait(60)
        return prepare(self, **kwargs)

    monkeypatch.setattr(CompareSession, "prepare", held)
    a, b = pair
    app = OptiqApp()
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            settle(app)
            screen = CompareScreen(a, b)
            await app.push_screen(screen)
            await wait_until(pilot, lambda: screen.ready, 60, "both models")
            await pilot.press("ctrl+l")  # fresh conversations: the pair is prepared again
            await wait_until(pilot, lambda: len(calls) == 2, 30, "the new preparation")
            assert not screen.ready
            screen.query_one("#cmp-prompt").focus()
            await pilot.press(*"Still there?", "enter")
            gate.set()
            await wait_until(pilot, lambda: answered(screen, 1), 120, "both answers")
            assert [m.answer_text for m in messages(screen.columns[0]) if m.role == "user"] == ["Still there?"]
    finally:
        gate.set()


async def test_a_masked_column_says_whether_its_side_answered_or_was_stopped():
    """Blind, before the vote: no figures, but 'stopped' when it was (the transcript says so too)."""
    from textual.app import App

    from optiq_tui.engine.events import Finished, GenStats
    from optiq_tui.ui.widgets.compare_column import CompareColumn
    from optiq_tui.ui.widgets.stream_batch import Batch

    class Two(App):
        def compose(self):
            yield CompareColumn("Left", id="left")
            yield CompareColumn("Right", id="right")

    app = Two()
    async with app.run_test(size=(80, 24)) as pilot:
        for side, reason in (("left", "stop"), ("right", "cancelled")):
            column = app.query_one(f"#{side}", CompareColumn)
            column.masked = True
            await column.start_answer(side)
            await column.apply(Batch(finished=Finished(reason, GenStats(gen_tokens=3, gen_tps=9.0))))
        await pilot.pause()
        assert "answered · its figures show after your vote" in str(app.query_one("#left").stats.render())
        assert "stopped · its figures show after your vote" in str(app.query_one("#right").stats.render())
