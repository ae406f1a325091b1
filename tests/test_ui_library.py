"""The library screen through Pilot: welcome, rows, filter, sort, details, marks, delete, import."""

from __future__ import annotations

import pytest
from textual.command import CommandList

from optiq_tui.ui.app import OptiqApp
from optiq_tui.ui.screens.modals import ConfirmModal, ErrorModal, InputModal, TextModal
from optiq_tui.ui.widgets.model_details import ModelDetails
from optiq_tui.ui.widgets.model_table import ModelTable
from tests.engine_proc import assert_on
from tests.ui_util import install_model, library_ready, wait_until


def widget_text(widget) -> str:
    """What ``widget`` shows on screen, as plain text."""
    return "\n".join(widget.render_line(y).text for y in range(widget.size.height))


@pytest.fixture
def two_models(optiq_home, tiny_llama_dir, tiny_qwen3_dir):
    """A library with the tiny llama (fp16) and the tiny qwen3 (bf16)."""
    install_model(tiny_llama_dir, optiq_home, "tiny-llama")
    install_model(tiny_qwen3_dir, optiq_home, "tiny-qwen3")
    return optiq_home


def table(app) -> ModelTable:
    return app.library.query_one(ModelTable)


async def answer_with_path(app, pilot, path) -> None:
    """Fill the open InputModal with ``path`` and accept it. Set, not typed: a tmp path typed key
    by key took ~5 s of each import test (typing into the dialog is covered by the download test)."""
    await wait_until(pilot, lambda: isinstance(app.screen, InputModal))
    app.screen.query_one("#answer").value = str(path)
    await pilot.press("enter")


async def test_empty_library_shows_the_welcome_panel(optiq_home):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        welcome = app.library.query_one("#welcome")
        assert welcome.display and not table(app).display
        await wait_until(pilot, lambda: welcome.size.height > 0)
        text = widget_text(welcome)
        assert "demo model" in text and "Hugging Face Hub" in text and "GGUF" in text
        # Actions that need a model are hidden from the footer and inert.
        assert app.library.check_action("quantize", ()) is False
        assert app.library.check_action("demo", ()) is True
        await pilot.press("q")
        assert app.screen is app.library


async def test_rows_filter_sort_and_details(two_models):
    app = OptiqApp()
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        t = table(app)
        assert t.row_count == 2 and not app.library.query_one("#welcome").display
        assert [m.name for m in t.shown] == ["tiny-llama", "tiny-qwen3"]

        details = app.library.query_one(ModelDetails)
        await wait_until(pilot, lambda: "tiny-llama" in widget_text(details))
        assert "fp16" in widget_text(details)
        await pilot.press("down")
        await wait_until(pilot, lambda: "tiny-qwen3" in widget_text(details))
        assert "bf16" in widget_text(details) and "think" in widget_text(details)

        # Sort: the same column twice flips the order; clicking a header sorts by it.
        t.sort_by("name")
        assert [m.name for m in t.shown] == ["tiny-qwen3", "tiny-llama"]
        await pilot.press("s")  # next column: arch, ascending
        assert t.sort_key == "model_type" and [m.model_type for m in t.shown] == ["llama", "qwen3"]
        before = list(t.columns).index("size_bytes")
        x = sum(col.get_render_width(t) for col in list(t.columns.values())[:before]) + 2
        await pilot.click("#models", offset=(x, 0))  # the header row
        await wait_until(pilot, lambda: t.sort_key == "size_bytes")
        assert t.sort_reverse  # numeric columns start largest first
        sizes = [m.size_bytes for m in t.shown]
        assert sizes == sorted(sizes, reverse=True)

        # Filter as you type: / focuses the filter, every word must match.
        await pilot.press("slash", *"qwen")
        await wait_until(pilot, lambda: [m.name for m in t.shown] == ["tiny-qwen3"])
        assert "1 shown" in widget_text(app.library.query_one("#library-status"))
        await pilot.press("escape")
        await wait_until(pilot, lambda: t.row_count == 2 and t.has_focus)


async def test_delete_asks_first_and_removes_the_folder(two_models, engine_kind):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        folder = two_models / "models" / "tiny-llama"
        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        assert "frees" in app.screen.question and str(folder) in app.screen.question
        await pilot.press("n")  # keep it
        await wait_until(pilot, lambda: app.screen is app.library)
        assert folder.exists()

        await pilot.press("delete")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        await pilot.press("y")
        await wait_until(pilot, lambda: not folder.exists() and table(app).row_count == 1)
        assert [m.name for m in table(app).shown] == ["tiny-qwen3"]
        assert not any((two_models / ".staging").iterdir())
        assert_on(app, engine_kind)


async def test_import_of_a_broken_gguf_shows_the_error_and_keeps_nothing(optiq_home, tmp_path, engine_kind):
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x00" * 20)  # the magic, then a truncated header
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        await pilot.press("i")
        await answer_with_path(app, pilot, broken)
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), timeout=60)
        assert "broken.gguf" in app.screen.title_text
        assert app.screen.message  # the importer's own explanation
        await pilot.press("escape")
        await wait_until(pilot, lambda: app.screen is app.library)
        assert not app.library.query_one("#job-bar").display
        assert list((optiq_home / "models").iterdir()) == []
        assert list((optiq_home / ".staging").iterdir()) == []
        assert_on(app, engine_kind)


async def test_import_of_a_gguf_adds_the_model_and_highlights_it(optiq_home, tmp_path, tiny_llama_dir, engine_kind):
    from tests.gguf_files import Q, write_llama_gguf

    source = tmp_path / "tiny.Q8_0.gguf"
    write_llama_gguf(tiny_llama_dir, source, Q.Q8_0)
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        await pilot.press("i")
        await answer_with_path(app, pilot, source)
        await wait_until(pilot, lambda: table(app).row_count == 1, timeout=120)
        info = table(app).highlighted_model
        assert info.quant_kind == "gguf" and "Q8_0" in info.quant
        assert not app.library.query_one("#job-bar").display
        assert_on(app, engine_kind)


# In-process only: it keeps the in-process engine's MLX thread busy from the test.
async def test_esc_cancels_a_queued_import(optiq_home, tmp_path, tiny_llama_dir):
    import threading

    from tests.gguf_files import Q, write_llama_gguf

    source = tmp_path / "tiny.Q8_0.gguf"
    write_llama_gguf(tiny_llama_dir, source, Q.Q8_0)
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        # Keep the engine's MLX thread busy so the import waits in the queue, then cancel it there.
        release = threading.Event()
        engine = await app.client()
        engine.client.service._threads["mlx"].submit(lambda emit, cancel: release.wait(30), name="busy")
        await pilot.press("i")
        await answer_with_path(app, pilot, source)
        await wait_until(pilot, lambda: app.library.query_one("#job-bar").display)
        await pilot.press("escape")
        release.set()
        await wait_until(pilot, lambda: not app.library.query_one("#job-bar").display)
        assert list((optiq_home / "models").iterdir()) == []
        assert list((optiq_home / ".staging").iterdir()) == []


async def test_download_offline_shows_the_error(optiq_home, engine_kind):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        await pilot.press("d")
        await wait_until(pilot, lambda: isinstance(app.screen, InputModal))
        await pilot.press(*"mlx-community/not-here", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ErrorModal), timeout=60)
        assert "not-here" in app.screen.title_text
        assert list((optiq_home / "models").iterdir()) == []
        assert_on(app, engine_kind)


async def test_marks_feed_compare_and_eval(two_models):
    from optiq_tui.ui.screens.compare import CompareScreen
    from optiq_tui.ui.screens.eval import EvalScreen

    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        await pilot.press("a", "down", "b")
        t = table(app)
        assert t.marked("A").name == "tiny-llama" and t.marked("B").name == "tiny-qwen3"
        status = widget_text(app.library.query_one("#library-status"))
        assert "A: tiny-llama" in status and "B: tiny-qwen3" in status
        await pilot.press("b")  # pressing again unmarks
        assert t.marked("B") is None
        await pilot.press("b")
        await pilot.press("c")
        await wait_until(pilot, lambda: isinstance(app.screen, CompareScreen))
        assert [side.info.name for side in app.screen.sides] == ["tiny-llama", "tiny-qwen3"]
        app.pop_screen()
        await wait_until(pilot, lambda: app.screen is app.library)
        app.library.action_eval()
        await wait_until(pilot, lambda: isinstance(app.screen, EvalScreen))
        evaluated = [m.name for m in app.screen.models]
        reference = app.screen.reference
        assert sorted(evaluated + ([reference.name] if reference else [])) == ["tiny-llama", "tiny-qwen3"]


async def test_help_lists_keys_and_skipped_folders(optiq_home, tiny_llama_dir):
    install_model(tiny_llama_dir, optiq_home, "tiny-llama")
    broken = optiq_home / "models" / "half-copied"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        assert "1 skipped" in widget_text(app.library.query_one("#library-status"))
        await pilot.press("question_mark")
        await wait_until(pilot, lambda: isinstance(app.screen, TextModal))
        assert "half-copied" in app.screen.text and "not valid JSON" in app.screen.text
        assert "Import a GGUF file" in app.screen.text


async def test_palette_runs_library_actions(two_models):
    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        await pilot.press("ctrl+p", *"delete the highlighted")
        palette = app.screen
        await wait_until(pilot, lambda: palette.query_one(CommandList).highlighted is not None)
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ConfirmModal))
        assert "tiny-llama" in app.screen.question


async def test_readable_at_80x24(two_models):
    app = OptiqApp()
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        t = table(app)
        details = app.library.query_one(ModelDetails)
        # Narrow terminals stack the details under the table: the table as tall as its
        # rows, the details every line the rest leaves (quantization, format, context).
        # The table's height follows its rows one layout pass later, so poll for it.
        await wait_until(pilot, lambda: t.row_count == 2 and t.region.height == t.row_count + 1)
        assert "-narrow" in app.library.classes
        assert details.region.height >= 12
        assert t.region.width == 80 and details.region.y > t.region.y
        assert "tiny-llama" in widget_text(t) and "Quantization" in widget_text(t)
        shown = widget_text(details)
        assert all(word in shown for word in ("Quant", "Chat", "Context"))
        status = widget_text(app.library.query_one("#library-status"))
        assert "2 models" in status and "sort: Name" in status


async def test_enter_opens_chat_with_the_highlighted_model(two_models):
    from optiq_tui.ui.screens.chat import ChatScreen

    app = OptiqApp()
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_until(pilot, lambda: library_ready(app))
        await pilot.press("down", "enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ChatScreen))
        assert app.screen.info.name == "tiny-qwen3"
