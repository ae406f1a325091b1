"""The chat widgets (scripted-stream replays) and the chat screen on real tiny models."""

from __future__ import annotations

import threading

from textual.app import App, ComposeResult
from textual.containers import VerticalScroll

from optiq_tui.engine.events import AnswerDelta, Finished, GenStats, ReasoningDelta, StatsUpdate
from optiq_tui.ui.widgets.chat_message import ChatMessage
from optiq_tui.ui.widgets.effort_switch import EffortSwitch
from optiq_tui.ui.widgets.stats_line import StatsLine, format_stats
from optiq_tui.ui.widgets.stream_batch import StreamBatch
from tests.engine_proc import assert_on
from tests.replay import replay_generate
from tests.ui_util import hold_job

# Chat-screen tests without the engine_kind fixture run in-process only: they patch its internals
# (hold_job, ChatSession.generate, loader.available_memory) or read its sessions (engine_session).

# A think-tag answer as a model streams it, one event per token (recorded shape).
RECORDED = (
    [ReasoningDelta(t) for t in ["The ", "user ", "asks ", "for ", "a ", "capital", "."]]
    + [AnswerDelta(t) for t in ["The ", "capital ", "of ", "France ", "is ", "**Paris**", "."]]
    + [Finished("stop", GenStats(ttft_s=0.05, gen_tokens=14, gen_tps=250.0, reasoning_tokens=7))]
)


class Host(App):
    """Hosts one widget under test."""

    def __init__(self, *widgets) -> None:
        super().__init__()
        self._widgets = widgets

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield from self._widgets


def test_stream_batch_coalesces_in_order():
    batch = StreamBatch()
    stats = GenStats(gen_tokens=3)
    for event in [ReasoningDelta("a"), ReasoningDelta("b"), AnswerDelta("c"), StatsUpdate(GenStats()), StatsUpdate(stats)]:
        batch.push(event)
    b = batch.drain()
    assert [(s.kind, s.text, s.events) for s in b.segments] == [("reasoning", "ab", 2), ("answer", "c", 1)]
    assert b.stats is stats and b.finished is None
    assert batch.drain().empty
    assert batch.drains == 1


def test_stream_batch_is_safe_across_threads():
    batch = StreamBatch()
    n = 5000
    texts: list[str] = []

    def produce() -> None:
        for i in range(n):
            batch.push(AnswerDelta(f"{i},"))

    thread = threading.Thread(target=produce)
    thread.start()
    while thread.is_alive():
        texts.extend(s.text for s in batch.drain().segments)
    thread.join()
    texts.extend(s.text for s in batch.drain().segments)
    assert "".join(texts) == "".join(f"{i}," for i in range(n))


async def test_chat_message_replays_a_recorded_stream():
    message = ChatMessage("assistant", label="tiny", streaming=True)
    async with Host(message).run_test() as pilot:
        batch = StreamBatch()
        # Reasoning arrives: the panel appears, open, counting tokens.
        for event in RECORDED[:7]:
            batch.push(event)
        await message.apply(batch.drain().segments)
        await pilot.pause()
        panel = message.reasoning_panel
        assert panel is not None and not panel.collapsed
        assert "7 tokens" in str(panel.title)
        # The answer starts: the panel folds away.
        for event in RECORDED[7:-1]:
            batch.push(event)
        await message.apply(batch.drain().segments)
        await pilot.pause()
        assert panel.collapsed
        await message.finish("stop", None, 7)
        assert message.answer_text == "The capital of France is **Paris**."
        assert message.reasoning_text == "The user asks for a capital."
        assert str(panel.title) == "Reasoning · 7 tokens"


async def test_chat_message_notes_a_stopped_answer():
    message = ChatMessage("assistant", streaming=True)
    async with Host(message).run_test() as pilot:
        batch = StreamBatch()
        batch.push(AnswerDelta("Half an ans"))
        await message.apply(batch.drain().segments)
        await message.finish("cancelled")
        await pilot.pause()
        assert message.answer_text == "Half an ans"
        assert message.reasoning_panel is None
        note = message.query_one(".note")
        assert note.display and "stopped" in str(note.render())


async def test_effort_switch_cycles_and_explains_when_unavailable():
    harmony = EffortSwitch(("low", "medium", "high"), "high", id="harmony")
    plain = EffortSwitch(None, reason="SmolLM2's template has no reasoning switch", id="plain")
    seen: list[str] = []

    class EffortHost(Host):
        def on_effort_switch_changed(self, event: EffortSwitch.Changed) -> None:
            seen.append(event.value)

    async with EffortHost(harmony, plain).run_test() as pilot:
        assert harmony.value == "high"
        harmony.focus()
        await pilot.press("enter")
        await pilot.press("space")
        await pilot.pause()
        assert seen == ["low", "medium"] and harmony.value == "medium"
        assert plain.value is None and not plain.can_focus
        # Compact beside the input; the reason is in the tooltip (and said on ^n).
        assert str(plain.render()) == "effort: n/a" and "no reasoning switch" in plain.tooltip
        plain.set_options(("on", "off"))
        assert plain.value == "on" and plain.can_focus


async def test_stats_line_keeps_final_figures():
    line = StatsLine()
    async with Host(line).run_test() as pilot:
        live = GenStats(ttft_s=0.123, prompt_tokens=12, prompt_tps=340.0, gen_tokens=5, gen_tps=21.0,
                        mlx_active_bytes=2_500_000, mlx_peak_bytes=3_000_000, rss_bytes=400_000_000)
        line.show_stats(live, live=True)
        await pilot.pause()
        assert line.has_class("live")
        line.show_stats(live, live=False)
        await pilot.pause()
        text = str(line.render())
        assert not line.has_class("live")
        assert "TTFT 0.12s" in text and "prompt 12 tok 340/s" in text and "gen 5 tok 21.0/s" in text
        assert "MLX 2.5 MB peak 3.0 MB" in text and "RSS 400.0 MB" in text
    assert format_stats(GenStats()).startswith("TTFT –")


# ---- the chat screen, driven through Pilot on real tiny models ---------------


from optiq_tui.ui.app import OptiqApp  # noqa: E402
from optiq_tui.ui.screens.chat import ChatScreen  # noqa: E402
from optiq_tui.ui.widgets.reasoning_panel import ReasoningPanel  # noqa: E402

POLL_S = 0.05


async def until(pilot, condition, what: str, limit: int = 1200) -> None:
    """Poll ``condition`` between frames (no fixed sleeps); fail after ``limit`` polls."""
    for _ in range(limit):
        if condition():
            return
        await pilot.pause(POLL_S)
    raise AssertionError(f"timed out waiting for {what}")


def info_of(path):
    from optiq_tui.library.catalog import inspect_model

    return inspect_model(path)


async def open_chat(pilot, app, path, *, max_tokens: int = 12) -> ChatScreen:
    app.settings.max_tokens = max_tokens
    app.settings.seed = 0
    app.settings.temperature = 0.0
    screen = ChatScreen(info_of(path))
    await app.push_screen(screen)
    await until(pilot, lambda: screen.ready is not None, "the model to load")
    return screen


def saved_users(screen: ChatScreen) -> list[str]:
    """The questions of the saved conversation, which the engine answers from."""
    return [m.content for m in screen.store.load(screen.conversation_id).messages if m.role == "user"]


def engine_session(app, screen: ChatScreen):
    """The in-process engine's session of the screen's conversation (None until it answers)."""
    return app.engine.client.service.ctx.sessions.get(screen.conversation_id)


def answers(screen: ChatScreen) -> list[ChatMessage]:
    return [m for m in screen.query(ChatMessage) if m.role == "assistant"]


async def test_chat_sends_streams_and_keeps_final_stats(tiny_llama_dir, engine_kind):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_llama_dir)
        effort = screen.query_one(EffortSwitch)
        assert effort.value is None and "no reasoning control" in effort.reason
        await pilot.press(*"Hello", "enter")
        await until(pilot, lambda: screen.flushes > 0 and not screen.generating, "the answer")
        [answer] = answers(screen)
        assert answer.finish_reason in ("stop", "length") and answer.answer_text
        stats = screen.stats_line
        assert stats.stats is not None and stats.stats.gen_tokens > 0 and not stats.has_class("live")
        shown = str(stats.render())
        assert shown.startswith("TTFT") and f"gen {stats.stats.gen_tokens} tok" in shown
        assert saved_users(screen) == ["Hello"]
        saved = screen.store.load(screen.conversation_id).messages
        assert [(m.role, m.content) for m in saved][-1] == ("assistant", answer.answer_text)
        assert_on(app, engine_kind)
        if app.in_process:  # an engine process keeps its sessions to itself
            assert [t.user for t in engine_session(app, screen).turns] == ["Hello"]


async def test_chat_stops_mid_answer(tiny_llama_dir, monkeypatch):
    from optiq_tui.engine.events import AnswerDelta

    gate = hold_job(monkeypatch, "chat", lambda event: isinstance(event, AnswerDelta))
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_llama_dir, max_tokens=4000)
        await pilot.press(*"Tell me a long story", "enter")
        # The answer is held after its first text until Esc has been pressed.
        await until(pilot, lambda: answers(screen) and answers(screen)[0].answer_text, "the first tokens")
        assert not screen.answer_ended.is_set()
        await pilot.press("escape")
        await until(pilot, gate.cancel_requested, "the stop request")
        gate.open()
        await until(pilot, screen.answer_ended.is_set, "the stop")
        assert not screen.generating
        [answer] = answers(screen)
        assert answer.finish_reason == "cancelled"
        assert screen.stats_line.stats.gen_tokens < 4000
        assert isinstance(app.screen, ChatScreen)  # Esc stopped, it did not leave


async def test_chat_effort_switch_drives_think_template(tiny_qwen3_dir):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_qwen3_dir)
        effort = screen.query_one(EffortSwitch)
        assert effort.options == ["on", "off"] and screen.effort == "on"
        await pilot.press("ctrl+n")
        assert screen.effort == "off" and app.settings.effort == "off"
        # The template pre-fills an empty think block when thinking is off.
        loaded = app.engine.client.service.ctx.loaded
        prompt = loaded.format.render([{"role": "user", "content": "hi"}], screen.effort)
        assert "<think>" in loaded.tokenizer.decode(prompt)


async def test_chat_reasoning_panels_toggle(tiny_qwen3_dir, monkeypatch):
    from optiq_tui.engine.session import ChatSession

    text = "<think>Let me reason step by step: 7 × 143 = 1001.</think> The answer is yes."
    monkeypatch.setattr(ChatSession, "generate", replay_generate(text))
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_qwen3_dir)
        for n in range(2):
            await pilot.press(*"Is 1001 divisible by 7?", "enter")
            await until(pilot, lambda: len(answers(screen)) == n + 1 and not screen.generating, "the replay")
            message = answers(screen)[-1]
            assert message.reasoning_text == "Let me reason step by step: 7 × 143 = 1001."
            assert message.answer_text == "The answer is yes."
        panels = list(screen.query(ReasoningPanel))
        assert len(panels) == 2 and all(p.collapsed for p in panels)
        await pilot.press("ctrl+t")
        assert not any(p.collapsed for p in panels)
        await pilot.press("ctrl+t")
        assert all(p.collapsed for p in panels)


async def test_chat_keeps_up_with_a_fast_stream(tiny_llama_dir, monkeypatch):
    """2000 tokens at up to 1000 tokens/s: complete text, coalesced batches, no backlog at the end."""
    from optiq_tui.engine.events import AnswerDelta, Finished, GenStats, ReasoningDelta, StatsUpdate
    from optiq_tui.engine.session import ChatSession

    n_tokens = 2000
    words = [f"w{i} " if i % 50 else f"w{i}\n\n" for i in range(n_tokens)]
    at_end: dict[str, int] = {}
    screens: list[ChatScreen] = []

    def fast(_session):
        # Paced like a 1000 tokens/s model; the wait is the producer's rate, not a test sleep.
        pace = threading.Event()
        for i in range(100):
            yield ReasoningDelta(f"r{i} ")
        for i, word in enumerate(words):
            yield AnswerDelta(word)
            if i % 100 == 0:
                yield StatsUpdate(GenStats(gen_tokens=i))
            pace.wait(0.001)
        at_end["flushes"] = screens[0].flushes
        yield Finished("stop", GenStats(gen_tokens=n_tokens))

    monkeypatch.setattr(ChatSession, "generate", replay_generate(fast))
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_llama_dir)
        screens.append(screen)
        updates_before = screen.stats_line.updates
        await pilot.press(*"Go", "enter")
        await until(pilot, lambda: answers(screen) and not screen.generating, "the fast stream")
        [message] = answers(screen)
        assert message.answer_text == "".join(words)
        assert message.reasoning_panel.tokens == 100
        # Batched: far fewer UI updates than tokens, yet streamed live, and
        # once the producer stopped the screen was at most a couple of batches behind.
        assert screen.flushes <= n_tokens // 10
        assert at_end["flushes"] >= 3
        assert screen.flushes - at_end["flushes"] <= 3
        assert screen.stats_line.updates - updates_before <= screen.flushes


async def test_chat_reopens_a_saved_conversation(tiny_llama_dir, engine_kind):
    from optiq_tui.ui.screens.conversations import ConversationsScreen

    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_llama_dir)
        await pilot.press(*"First question", "enter")
        await until(pilot, lambda: not screen.generating and answers(screen), "the answer")
        first_answer = answers(screen)[0].answer_text
        saved_id = screen.conversation_id
        assert saved_id is not None
        await pilot.press("ctrl+l")
        await until(pilot, lambda: not list(screen.query(ChatMessage)), "the clear")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, ConversationsScreen), "the conversations list")
        assert [c.id for c in app.screen.conversations] == [saved_id]
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen and len(list(screen.query(ChatMessage))) == 2, "reopen")
        user, answer = screen.query(ChatMessage)
        assert user.answer_text == "First question" and answer.answer_text == first_answer
        assert screen.conversation_id == saved_id
        # The engine answers the reopened conversation from its file: the first question is in it.
        await pilot.press(*"Second question", "enter")
        await until(pilot, lambda: len(answers(screen)) == 2 and not screen.generating, "the second answer")
        assert saved_users(screen) == ["First question", "Second question"]
        assert_on(app, engine_kind)
        if app.in_process:  # an engine process keeps its sessions to itself
            assert [t.user for t in engine_session(app, screen).turns] == ["First question", "Second question"]


async def test_chat_says_when_the_model_will_not_fit(tiny_llama_dir, monkeypatch):
    from optiq_tui.engine import loader

    monkeypatch.setattr(loader, "available_memory", lambda: (1 << 20, "test limit"))
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = ChatScreen(info_of(tiny_llama_dir))
        await app.push_screen(screen)
        notice = screen.query_one("#notice")
        await until(pilot, lambda: notice.display, "the notice")
        assert "needs about" in str(notice.render()) and "Ctrl+G" in str(notice.render())
        assert screen.query_one("#prompt").disabled


async def test_chat_offers_to_drop_old_turns_when_the_context_is_full(tiny_llama_dir):
    from optiq_tui.ui.screens.modals import ConfirmModal

    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_llama_dir, max_tokens=4)
        long_text = "the quick brown fox " * 250  # ~1000 tokens of the tiny model's 2048 context
        prompt = screen.query_one("#prompt")
        for turn in range(2):
            prompt.value = long_text
            await pilot.press("enter")
            if turn == 0:
                await until(pilot, lambda: answers(screen) and not screen.generating, "the first answer")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the offer to drop turns")
        assert "context is 2048" in str(app.screen.query_one("#question").render())
        await pilot.press("y")
        await until(pilot, lambda: app.screen is screen and len(answers(screen)) == 2 and not screen.generating,
                    "the answer after dropping")
        assert answers(screen)[-1].finish_reason in ("stop", "length")
        assert [t.user for t in engine_session(app, screen).turns] == [long_text.strip()]
        assert saved_users(screen) == [long_text.strip()] * 2  # the dropped turn stays in the file


async def test_conversations_screen_renames_exports_and_deletes(tmp_path, optiq_home, monkeypatch):
    from optiq_tui.engine.conversations import ConversationStore
    from optiq_tui.ui.screens.conversations import ConversationsScreen
    from optiq_tui.ui.screens.modals import ConfirmModal, InputModal

    store = ConversationStore()
    first = store.create("tiny-llama", "About foxes")
    store.append(first, "user", "What does the fox say?")
    store.append(first, "assistant", "Nobody knows.", reasoning="Hmm.")
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = ConversationsScreen()
        await app.push_screen(screen)
        assert [c.title for c in screen.conversations] == ["About foxes"]

        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, InputModal), "the rename dialog")
        app.screen.query_one("#answer").value = "Foxes, renamed"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen and screen.conversations[0].title == "Foxes, renamed", "rename")
        assert store.load(first).title == "Foxes, renamed"

        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, InputModal), "the export dialog")
        target = tmp_path / "foxes.md"
        app.screen.query_one("#answer").value = str(target)
        await pilot.press("enter")
        await until(pilot, target.exists, "the export")
        assert "Nobody knows." in target.read_text()

        # The default: the exports folder, shown with ~ so the whole path fits; the prompt names the folder.
        monkeypatch.setenv("HOME", str(optiq_home.parent))
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, InputModal), "the export dialog")
        default = store.default_export_path(first)
        assert app.screen.query_one("#answer").value == f"~/{default.relative_to(optiq_home.parent)}"
        assert f"go to ~/{default.parent.relative_to(optiq_home.parent)}" in app.screen.prompt
        await pilot.press("enter")
        await until(pilot, default.exists, "the export to the default path")

        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmModal), "the delete question")
        await pilot.press("y")
        await until(pilot, lambda: app.screen is screen and not screen.conversations, "the delete")
        assert store.list() == []
        assert screen.query_one("#conv-empty").display


async def test_chat_regenerates_edits_and_copies(tiny_llama_dir):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_llama_dir)
        await pilot.press(*"Hi", "enter")
        await until(pilot, lambda: answers(screen) and not screen.generating, "the answer")
        await pilot.press("ctrl+y")
        assert app.clipboard == answers(screen)[0].answer_text
        assert any(f"({len(app.clipboard)} characters)" in n.message for n in app._notifications)

        await pilot.press("ctrl+r")
        await until(pilot, lambda: len(answers(screen)) == 1 and answers(screen)[0].finish_reason
                    and not screen.generating, "the regenerated answer")
        assert [m.answer_text for m in screen.query(ChatMessage) if m.role == "user"] == ["Hi"]
        assert saved_users(screen) == ["Hi"]
        saved = screen.store.load(screen.conversation_id).messages
        assert [m.role for m in saved] == ["system", "user", "assistant"]  # one system prompt, not two
        assert [t.user for t in engine_session(app, screen).turns] == ["Hi"]
        # A regenerate reuses the cached prompt: no made-up prompt rate.
        assert "prompt cached" in str(screen.stats_line.render())


async def test_chat_edit_last_changes_nothing_until_sent(tiny_llama_dir):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        screen = await open_chat(pilot, app, tiny_llama_dir)
        await pilot.press(*"Hi", "enter")
        await until(pilot, lambda: answers(screen) and not screen.generating, "the answer")
        saved = screen.store.load(screen.conversation_id).messages
        assert [m.role for m in saved] == ["system", "user", "assistant"]  # the engine saved all three

        prompt = screen.query_one("#prompt")
        await pilot.press("ctrl+b")
        assert prompt.value == "Hi" and prompt.cursor_position == 2
        await pilot.press(*" there")
        assert prompt.value == "Hi there"
        # Abandoned with Esc: the chat, the session and the file are as they were.
        await pilot.press("escape")
        assert app.screen is screen and prompt.value == ""
        assert len(list(screen.query(ChatMessage))) == 2
        assert screen.store.load(screen.conversation_id).messages == saved
        assert [t.user for t in engine_session(app, screen).turns] == ["Hi"]

        await pilot.press("ctrl+b", *" there")
        assert screen.store.load(screen.conversation_id).messages == saved
        await pilot.press("enter")
        await until(pilot, lambda: answers(screen) and not screen.generating, "the new answer")
        assert [m.answer_text for m in screen.query(ChatMessage) if m.role == "user"] == ["Hi there"]
        assert [t.user for t in engine_session(app, screen).turns] == ["Hi there"]
        now = [m for m in screen.store.load(screen.conversation_id).messages if m.role != "system"]
        assert [(m.role, m.content) for m in now][0] == ("user", "Hi there") and len(now) == 2


async def test_chat_sampler_is_set_per_conversation_and_saved(tiny_llama_dir, tmp_path):
    import json
    import shutil

    from optiq_tui.ui.screens.chat.sampler import SamplerModal

    model = tmp_path / "tiny-with-config"
    shutil.copytree(tiny_llama_dir, model)
    (model / "generation_config.json").write_text(json.dumps({"temperature": 0.3, "top_p": 0.8}))
    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, app, model)
        app.settings.temperature = app.settings.top_p = None  # no app-wide choice: the model's own
        assert screen.current_sampler()[0].temperature == 0.3
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, SamplerModal), "the sampler dialog")
        dialog = app.screen
        assert "temp 0.3 · top-p 0.8" in str(dialog.query_one("#sampler-defaults").render())
        assert dialog.query_one("#temperature").placeholder == "0.3 (default)"
        dialog.query_one("#temperature").value = "hot"
        dialog.query_one("#top_p").value = "2"
        dialog.query_one("#max_tokens").value = "6"
        dialog.query_one("#system_prompt").value = "Answer in one word."
        await pilot.press("enter")
        errors = str(dialog.query_one("#sampler-errors").render())
        assert "temperature" in errors and "top-p" in errors  # every problem at once, each field marked
        assert dialog.query_one("#temperature").has_class("-invalid") and dialog.query_one("#top_p").has_class("-invalid")
        assert not dialog.query_one("#max_tokens").has_class("-invalid")
        dialog.query_one("#temperature").value = "0"
        dialog.query_one("#top_p").value = ""
        dialog.query_one("#temperature").focus()
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is screen, "the dialog to close")
        assert screen.chat_settings == {"temperature": 0.0, "max_tokens": 6, "system_prompt": "Answer in one word."}
        await pilot.press(*"Hi", "enter")
        await until(pilot, lambda: answers(screen) and not screen.generating, "the answer")
        assert engine_session(app, screen).system_prompt == "Answer in one word."
        assert screen.stats_line.stats.gen_tokens <= 6
        saved = screen.store.load(screen.conversation_id)
        assert saved.settings == screen.chat_settings
        # Another conversation starts from what it saved, not from this one's.
        conversation_id = screen.conversation_id
        screen.chat_settings = {}
        await screen.open_conversation(conversation_id)
        assert screen.chat_settings["system_prompt"] == "Answer in one word."


def test_split_point_cuts_after_finished_blocks_never_inside_a_fence():
    from optiq_tui.ui.widgets.streamed_markdown import opens_fence, split_point

    assert split_point("one\n\ntwo", False) == len("one\n\n")
    assert split_point("no blank line yet", False) == 0
    fenced = "```python\nx = 1\n\ny = 2\n```\n\nafter"
    assert split_point(fenced, False) == len(fenced) - len("after")  # not at the blank inside the fence
    assert split_point("x = 1\n\ny = 2", True) == 0  # the text starts inside a fence
    assert opens_fence("```\ncode", False) and not opens_fence("```\ncode\n```", False)


async def test_streamed_markdown_keeps_finished_parts_and_all_the_text():
    from optiq_tui.ui.widgets.streamed_markdown import FREEZE_CHARS, StreamedMarkdown

    view = StreamedMarkdown()
    paragraphs = [f"Paragraph {i}: " + "word " * 40 + "\n\n" for i in range(3 * FREEZE_CHARS // 200)]
    async with Host(view).run_test() as pilot:
        for paragraph in paragraphs:
            await view.write(paragraph)
        await pilot.pause()
        assert view.text == "".join(paragraphs)
        # Long text is held in a few parts, each rendered once, not one widget per block.
        assert 2 <= view.parts <= len(paragraphs) // 4


def test_blocks_split_outside_fences_and_render_as_the_whole_text():
    from rich.console import Console
    from rich.markdown import Markdown

    from optiq_tui.ui.widgets.streamed_markdown import BlockMarkdown, split_blocks

    assert split_blocks("a\nb\n\nc\n\n\n```\nx\n\ny\n```\n\nopen") == ["a\nb\n", "c\n", "```\nx\n\ny\n```\n", "open"]
    assert split_blocks("done\n\n") == ["done\n", ""]  # nothing open yet
    console = Console(width=40, force_terminal=True)
    text = "# Title\n\nOne paragraph here.\n\n```\ncode\n\nmore\n```\n\nThe open one"
    cache: dict = {}
    view = BlockMarkdown(split_blocks(text), cache, last_open=True)
    plain = lambda segments: "".join(s.text for s in segments)  # noqa: E731
    assert plain(console.render(view)) == plain(console.render(Markdown(text)))
    assert len(cache) == 3  # the finished blocks, kept for the next frame; not the open one
    assert view.open_row == len(view.lines(console, console.options)) - 1


def test_markdown_with_the_shared_parser_renders_as_rich_markdown():
    from rich.console import Console
    from rich.markdown import Markdown

    from optiq_tui.ui.widgets.streamed_markdown import rich_markdown

    console = Console(width=60, force_terminal=True, color_system="truecolor")
    text = ("# Title\n\nSome *em*, **strong**, ~~struck~~ and `code`, a [link](https://example.com).\n\n"
            "- one\n- two\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\nx = 1\n```\n\n> quoted")

    def shown(document) -> list[tuple[str, str]]:  # text and style (a link's random id left out)
        return [(s.text, str(s.style)) for s in console.render(document)]

    assert shown(rich_markdown(text)) == shown(Markdown(text))
    assert ("struck", "strike") in shown(rich_markdown(text))
    assert rich_markdown("other").markup == "other" and rich_markdown("a").parsed != rich_markdown("b").parsed


def test_reserve_follows_the_stream_rate_within_a_share_of_the_screen():
    from optiq_tui.ui.widgets.streamed_markdown import reserve_rows

    assert reserve_rows(1, 2.0, 40) == 0  # a slow stream scrolls line by line
    assert reserve_rows(10, 1.0, 40) == 6  # about 0.6 s of it
    assert reserve_rows(100, 1.0, 40) == 24  # never more than 60% of the screen


async def test_a_fast_stream_fills_blank_rows_below_the_tail_then_ends_as_one_document(monkeypatch):
    from rich.markdown import Markdown

    from optiq_tui.ui.widgets import streamed_markdown

    clock = [100.0]
    monkeypatch.setattr(streamed_markdown, "monotonic", lambda: clock[0])
    view = streamed_markdown.StreamedMarkdown()
    paragraph = "word " * 8 + "\n\n"  # one row and a blank one
    async with Host(view).run_test(size=(80, 24)) as pilot:
        await view.write(paragraph)
        await pilot.pause()
        clock[0] += 0.1
        await view.write(paragraph * 5)  # 10 rows in 0.1 s: a fast stream
        await pilot.pause()
        tail = view.children[-1]
        height, reserved = tail.size.height, view.reserved_rows
        assert reserved > 0 and height == view._text_rows + reserved
        # More text fills the blank rows: the tail (and so the screen's layout) keeps its height.
        clock[0] += 0.05
        await view.write(paragraph * 2)
        await pilot.pause()
        assert tail.size.height == height and view.reserved_rows == reserved - 4
        view.end_stream()
        await pilot.pause()
        assert view.reserved_rows == 0
        text = paragraph * 8
        assert view.text == text
        rows = len(pilot.app.console.render_lines(Markdown(text), pilot.app.console.options.update_width(tail.size.width)))
        assert tail.size.height == rows


def test_flush_pacer_steers_the_ui_share_to_its_budget():
    from optiq_tui.ui.widgets import stream_batch

    wall, cpu = [0.0], [0.0]
    pacer = stream_batch.FlushPacer(clock=lambda: wall[0], cpu_clock=lambda: cpu[0])

    def flush(cost: float, interval: float) -> float:
        wall[0] += interval
        cpu[0] += cost
        return pacer.next_interval()

    interval = flush(0.5, 0.1)  # the first flush also mounted the messages: not counted
    assert interval == stream_batch.FLUSH_INTERVAL_S
    for _ in range(20):  # 10 ms a flush: 10% at 0.1 s, so the flushes space out
        interval = flush(0.010, interval)
    assert 0.010 / interval <= stream_batch.UI_CPU_BUDGET * 1.2
    for _ in range(20):  # cheap flushes again: back to the smoothest pace
        interval = flush(0.001, interval)
    assert interval == stream_batch.FLUSH_INTERVAL_S


async def test_chat_shows_waiting_for_first_token_and_copies_only_finished_answers(tiny_llama_dir, monkeypatch):
    import threading

    from optiq_tui.engine.session import ChatSession

    gate = threading.Event()
    generate = ChatSession.generate

    def held(self, *args, **kwargs):
        # The second answer waits, as a long prompt's processing would, until the test has looked.
        if len(self.turns) == 1:
            gate.wait(60)
        yield from generate(self, *args, **kwargs)

    monkeypatch.setattr(ChatSession, "generate", held)
    app = OptiqApp()
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await open_chat(pilot, app, tiny_llama_dir)
            await pilot.press(*"Hi", "enter")
            await until(pilot, lambda: answers(screen) and not screen.generating, "the first answer")
            first = answers(screen)[0].answer_text
            await pilot.press(*"Again", "enter")
            await until(pilot, lambda: "waiting for first token" in str(screen.stats_line.render()), "the wait")
            await pilot.press("ctrl+y")
            assert app.clipboard == first  # not the answer still to come
            assert any("the answer before this one" in n.message for n in app._notifications)
            gate.set()
            await until(pilot, lambda: len(answers(screen)) == 2 and not screen.generating, "the second answer")
            assert "waiting" not in str(screen.stats_line.render())
    finally:
        gate.set()


async def test_every_chat_key_is_also_in_the_command_palette(tiny_llama_dir):
    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_chat(pilot, app, tiny_llama_dir)
        titles = {command.title for command in app.get_system_commands(screen)}
        # The footer shows what fits at 80 columns; the palette has every one.
        assert {"Copy", "Sampler", "New", "Model", "Chats", "Retry", "Edit", "Reasoning", "Effort"} <= titles
