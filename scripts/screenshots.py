"""Regenerate the SVG screenshots in screenshots/ by driving the real app headless.

    python scripts/screenshots.py            # every screen
    python scripts/screenshots.py library    # only the shots whose name contains "library"

Each shot is an entry of SHOTS: a name (the file is screenshots/<name>.svg),
the prepared app folder it runs in (a key of HOMES), and an async function
that drives the app with Pilot to the state worth showing. Add a screen by
appending an entry. Nothing here is faked: models are real (tiny ones built
on the spot, and the demo model, imported once into a cache folder or
taken from OPTIQ_DEMO_DIR), and the quantize view is captured while a real quantize runs.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for tests.tiny (the tiny model builders)

SIZE = (100, 30)
OUT = ROOT / "screenshots"
sys.path.insert(0, str(ROOT / "benchmarks"))
from optiq_tui.engine.blas import use_openblas  # noqa: E402

# Before anything imports MLX: the shots run float32 MLX work (quantize, eval, chat).
use_openblas()
from demo_model import demo_dir  # noqa: E402
from tests.replay import replay_generate  # noqa: E402

DEMO_DIR = demo_dir()


async def wait_until(pilot, predicate: Callable[[], object], timeout: float = 120.0, what: str = "") -> None:
    """Let the app run until ``predicate()`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout}s waiting for {what or predicate}")
        await pilot.pause(0.05)


async def library_loaded(app, pilot) -> None:
    await wait_until(pilot, lambda: app.library.catalog is not None, what="the library scan")
    await pilot.pause(0.2)


async def highlight(app, pilot, name: str) -> None:
    """Put the library's cursor on the model called ``name``."""
    from optiq_tui.ui.widgets.model_table import ModelTable

    await library_loaded(app, pilot)
    table = app.library.query_one(ModelTable)
    table.set_models(table.models, highlight=name)
    await wait_until(pilot, lambda: table.highlighted_model and table.highlighted_model.name == name, what=name)
    await pilot.pause(0.2)


def demo_or(fallback: str) -> str:
    """The demo model's name when the shots have it, else ``fallback``."""
    from optiq_tui.library.demo import DEMO_NAME

    return DEMO_NAME if DEMO_DIR.is_dir() else fallback


# -- prepared app folders ------------------------------------------------------


def prepare_empty(home: Path) -> None:
    """A first run: nothing in the library."""


def add_demo_and_uniform4(models: Path) -> None:
    """Link the demo model in and make a real uniform 4-bit quant of it with our pipeline.

    The quant records its source, so compare shows cross-KL and eval finds
    the reference; on a Linux CPU the engine runs it with float32 scales.
    """
    from optiq_tui.library.catalog import inspect_model
    from optiq_tui.quant.config import QuantConfig
    from optiq_tui.quant.pipeline import quantize

    # Linked, not copied: read-only use of a model folder someone else owns.
    (models / DEMO_DIR.name).symlink_to(DEMO_DIR, target_is_directory=True)
    quantize(inspect_model(models / DEMO_DIR.name), QuantConfig(uniform_bits=4, verify=False))


def prepare_library(home: Path) -> None:
    """Tiny llama (6 layers) and qwen3 models, plus the demo model and a uniform 4-bit quant of it."""
    from tests.tiny import build_tiny_llama, build_tiny_qwen3

    models = home / "models"
    build_tiny_llama(models / "tiny-llama-6L", layers=6)
    build_tiny_qwen3(models / "tiny-qwen3")
    if DEMO_DIR.is_dir():
        add_demo_and_uniform4(models)


def prepare_pair(home: Path) -> None:
    """The demo model and its uniform 4-bit quant (two tiny llamas without the demo)."""
    from tests.tiny import build_tiny_llama

    models = home / "models"
    if not DEMO_DIR.is_dir():
        build_tiny_llama(models / "tiny-llama-6L", layers=6)
        build_tiny_llama(models / "tiny-llama-6L-b", layers=6, seed=1)
        return
    add_demo_and_uniform4(models)


HOMES: dict[str, Callable[[Path], None]] = {
    "empty": prepare_empty,
    "library": prepare_library,
    "pair": prepare_pair,
}


# -- the shots -----------------------------------------------------------------


async def shot_library_empty(app, pilot) -> None:
    await library_loaded(app, pilot)


async def shot_library(app, pilot) -> None:
    await highlight(app, pilot, demo_or("tiny-llama-6L"))


async def shot_quantize_form(app, pilot) -> None:
    from optiq_tui.ui.screens.quantize import QuantizeScreen

    await highlight(app, pilot, demo_or("tiny-llama-6L"))
    await pilot.press("q")
    await wait_until(pilot, lambda: isinstance(app.screen, QuantizeScreen))
    await pilot.pause(0.3)


async def shot_quantize_progress(app, pilot) -> None:
    """A real quantize of the 6-layer tiny llama, captured while it verifies (chart allocated)."""
    from optiq_tui.ui.screens.quantize_progress import QuantizeProgressScreen
    from optiq_tui.ui.widgets.stage_list import StageList

    await highlight(app, pilot, "tiny-llama-6L")
    await pilot.press("q")
    await pilot.pause(0.3)
    await pilot.press("ctrl+s")
    await wait_until(pilot, lambda: isinstance(app.screen, QuantizeProgressScreen))
    screen = app.screen
    stages = screen.query_one(StageList)
    bar = screen.query_one("#stage-bar")
    await wait_until(
        pilot,
        lambda: (stages.running == "verify" and (bar.progress or 0) >= 1) or screen.state != "running",
        timeout=600,
        what="the quantize to reach verification",
    )
    if screen.state != "running":
        print("  note: the quantize finished before the mid-run capture", file=sys.stderr)
    await pilot.pause(0.3)


async def shot_about(app, pilot) -> None:
    from optiq_tui.ui.screens.about import AboutScreen

    await library_loaded(app, pilot)
    await pilot.press("f1")
    await wait_until(pilot, lambda: isinstance(app.screen, AboutScreen) and app.screen.diagnostics is not None)
    await pilot.pause(0.3)


# -- chat, compare and eval -------------------------------------------------------

# A think-tag answer as a reasoning model writes it. The reasoning shots replay
# it token by token through tiny-qwen3's real tokenizer and think-tag parser
# (a tiny random model only writes gibberish), and say so in the status line.
RECORDED_QUESTION = "Is 1001 a prime number?"
RECORDED_THINK = (
    "<think>\nThe user asks whether 1001 is prime. Try small factors: it is odd, the digit sum "
    "is 2 so not divisible by 3, and it does not end in 0 or 5. Try 7: 7 × 143 = 1001. "
    "And 143 = 11 × 13. So 1001 = 7 × 11 × 13.\n</think>\n\n"
    "**No.** 1001 is not prime: it factors as\n\n- 7 × 143 = 1001\n- 143 = 11 × 13\n\n"
    "so 1001 = 7 × 11 × 13."
)
REPLAY_NOTE = "replay of a recorded think-tag stream through tiny-qwen3's tokenizer and parser (no model stats)"


async def open_chat(app, pilot, name: str):
    from optiq_tui.library.catalog import resolve
    from optiq_tui.ui.screens.chat import ChatScreen

    await library_loaded(app, pilot)
    screen = ChatScreen(resolve(name))
    await app.push_screen(screen)
    await wait_until(pilot, lambda: screen.ready is not None, what=f"{name} to load")
    return screen


async def shot_chat(app, pilot) -> None:
    """The demo model answering for real (greedy, short answer)."""
    app.settings.temperature = 0.0
    app.settings.max_tokens = 80
    screen = await open_chat(app, pilot, demo_or("tiny-llama-6L"))
    await pilot.press(*"What is the capital of France?", "enter")
    await wait_until(pilot, lambda: screen.flushes and not screen.generating, timeout=600, what="the answer")
    await pilot.pause(0.3)


async def reasoning_shot(app, pilot, *, finish: bool) -> None:
    import threading

    from optiq_tui.engine.session import ChatSession

    screen = await open_chat(app, pilot, "tiny-qwen3")
    gate = threading.Event()
    # The recorded stream in place of the model's generation, inside the engine's chat job.
    real, ChatSession.generate = ChatSession.generate, replay_generate(RECORDED_THINK, gate)
    try:
        await pilot.press(*RECORDED_QUESTION, "enter")
        await wait_until(pilot, lambda: screen.transcript.last("assistant") is not None, what="the answer to start")
        message = screen.transcript.last("assistant")
        reasoning = RECORDED_THINK.split("</think>")[0].removeprefix("<think>").strip()
        await wait_until(pilot, lambda: message.reasoning_text.strip() == reasoning, what="the reasoning")
        if finish:
            gate.set()
            await wait_until(pilot, lambda: not screen.generating, what="the answer")
    finally:
        gate.set()
        ChatSession.generate = real
    screen.stats_line.show_text(REPLAY_NOTE)
    await pilot.pause(0.3)


async def shot_chat_reasoning_open(app, pilot) -> None:
    await reasoning_shot(app, pilot, finish=False)


async def shot_chat_reasoning_collapsed(app, pilot) -> None:
    await reasoning_shot(app, pilot, finish=True)


def demo_pair():
    """The demo model and its 4-bit quant (or two tiny models without the demo)."""
    from optiq_tui.library import catalog

    models = catalog.scan(include_hf_cache=False).models
    by_name = {m.name: m for m in models}
    demo = by_name.get(demo_or(""))
    if demo is not None:
        quants = [m for m in models if m.path != demo.path and m.name.startswith(demo.name)]
        if quants:
            return demo, quants[0]
    tiny = sorted(n for n in by_name if n.startswith("tiny-llama"))
    return by_name[tiny[0]], by_name[tiny[-1]]


async def compare_shot(app, pilot, *, blind: bool) -> None:
    from optiq_tui.ui.screens.compare import CompareScreen

    app.settings.temperature = 0.0
    app.settings.max_tokens = 40
    await library_loaded(app, pilot)
    a, b = demo_pair()
    screen = CompareScreen(a, b, blind=blind, seed=1)
    await app.push_screen(screen)
    await wait_until(pilot, lambda: screen.ready, timeout=300, what="both models")
    await pilot.press(*"What is the capital of France?", "enter")
    await wait_until(pilot, lambda: screen.result is not None and not screen.running, timeout=900, what="both answers")
    await pilot.pause(0.3)


async def shot_compare(app, pilot) -> None:
    await compare_shot(app, pilot, blind=False)


async def shot_compare_blind(app, pilot) -> None:
    await compare_shot(app, pilot, blind=True)


async def shot_eval(app, pilot) -> None:
    """A real quick eval of the demo model's 4-bit quant against the demo model.

    Without the retrieval probe (the screen says so): its 512-2048-token
    prompts took about 20 minutes per model on the shared 2-core dev machine.
    """
    from optiq_tui.ui.screens.eval import EvalScreen

    await library_loaded(app, pilot)
    a, b = demo_pair()
    screen = EvalScreen([a, b], retrieval=False)
    await app.push_screen(screen)
    await pilot.press("enter")
    await wait_until(pilot, lambda: screen.report is not None, timeout=1800, what="the eval")
    await pilot.pause(0.3)


@dataclass(frozen=True)
class Shot:
    name: str
    home: str
    drive: Callable[..., Awaitable[None]]


SHOTS: list[Shot] = [
    Shot("library-empty", "empty", shot_library_empty),
    Shot("library", "library", shot_library),
    Shot("quantize-form", "library", shot_quantize_form),
    Shot("quantize-progress", "library", shot_quantize_progress),
    Shot("about", "library", shot_about),
    Shot("chat", "library", shot_chat),
    Shot("chat-reasoning-open", "library", shot_chat_reasoning_open),
    Shot("chat-reasoning-collapsed", "library", shot_chat_reasoning_collapsed),
    Shot("compare", "pair", shot_compare),
    Shot("compare-blind", "pair", shot_compare_blind),
    Shot("eval", "library", shot_eval),
]


# -- running -------------------------------------------------------------------


async def take(shot: Shot, home: Path) -> Path:
    from optiq_tui.ui.app import OptiqApp

    os.environ["OPTIQ_HOME"] = str(home)
    app = OptiqApp()
    async with app.run_test(size=SIZE) as pilot:
        await shot.drive(app, pilot)
        path = Path(app.save_screenshot(f"{shot.name}.svg", str(OUT)))
    return path


def main(argv: list[str]) -> int:
    wanted = [s for s in SHOTS if not argv or any(a in s.name for a in argv)]
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="optiq-shots-") as tmp:
        # Never show (or touch) the user's own library or Hugging Face cache.
        os.environ["HF_HOME"] = str(Path(tmp) / "hf")
        os.environ["HF_HUB_OFFLINE"] = "1"
        # The engine in this process: replays stand in for its generation, and no engine outlives the shots.
        os.environ["OPTIQ_ENGINE"] = "in-process"
        homes: dict[str, Path] = {}
        for shot in wanted:
            if shot.home not in homes:
                home = Path(tmp) / shot.home
                (home / "models").mkdir(parents=True)
                os.environ["OPTIQ_HOME"] = str(home)
                print(f"preparing {shot.home} …", file=sys.stderr)
                HOMES[shot.home](home)
                homes[shot.home] = home
            started = time.monotonic()
            # A shot that changes its folder (a quantize adds a model) gets a copy.
            home = Path(tmp) / f"{shot.name}-home"
            shutil.copytree(homes[shot.home], home, symlinks=True)
            path = asyncio.run(take(shot, home))
            print(f"{path.relative_to(ROOT)}  ({time.monotonic() - started:.1f}s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
