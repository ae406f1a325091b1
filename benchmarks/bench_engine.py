"""Chat speed through the engine clients against raw mlx-lm, on the demo model, in one run.

Contenders, greedy, the same prompt, rounds interleaved (best round of each compared,
so other load on the machine does not decide the ratios):

- raw: ``mlx_lm.stream_generate`` on this process's main thread;
- in-process: ``InProcessClient().chat`` (the engine's MLX thread in this process);
- remote: ``RemoteClient.chat`` against an engine process on a temporary OPTIQ_HOME,
  events streamed over HTTP as JSON lines.

Client figures are measured where the client reads the events: answer tokens
over the time from the first to the last one received, counted the way
mlx-lm counts ``generation_tps``. Targets (issue 11): remote >= 0.95 x raw,
in-process >= 0.98 x raw.

Then the TUI's first paint (a fresh ``optiq-chat`` process, from its start to its
library's first frame; median of the rounds), when it attaches to a running engine
and when it has to start one (target < 0.5 s both: paint first, connect after),
against the same TUI with an in-process engine and a bare Textual app (the floor: Python
and Textual alone); with the CPU seconds each had used by its first frame (steadier than
wall time on a loaded machine); and when it was connected.
``--first-paint-only`` skips the chat rounds (no model needed).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
        python benchmarks/bench_engine.py --tokens 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import psutil

SYSTEM = "You are a helpful assistant."
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def raw_round(loaded, prompt_ids: list[int], tokens: int) -> tuple[float, int]:
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    last = None
    for last in stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt_ids), max_tokens=tokens,
                                sampler=make_sampler(temp=0.0)):
        pass
    assert last is not None
    return last.generation_tps, last.generation_tokens


def client_round(client, model: str, tokens: int) -> tuple[float, int, float]:
    """(tokens/s seen by the client, tokens, the engine's own tokens/s for the same answer)."""
    from optiq_tui.engine.events import AnswerDelta, Finished, ReasoningDelta

    job = client.chat(model, PROMPT, system=SYSTEM, save=False,
                      sampler={"temperature": 0.0, "max_tokens": tokens})
    first = last = None
    finished = None
    for event in client.events(job.id):
        if isinstance(event, (AnswerDelta, ReasoningDelta)):
            last = time.perf_counter()
            first = first or last
        elif isinstance(event, Finished):
            finished = event
    assert finished is not None and finished.reason in ("stop", "length"), finished
    n = finished.stats.gen_tokens
    # Text deltas can lag a token behind (detokenizer), so time over the deltas' span, n tokens.
    return n / (last - first), n, finished.stats.gen_tps


@contextmanager
def cpu_seconds(into: list[float], tokens: int, other: "psutil.Process | None" = None) -> Iterator[None]:
    """CPU seconds per token of this process (all its threads), plus ``other``'s (the engine)."""
    def now() -> float:
        extra = sum(other.cpu_times()[:2]) if other is not None else 0.0
        return time.process_time() + extra

    start = now()
    yield
    into.append((now() - start) / tokens)


def start_engine(home: Path) -> tuple[subprocess.Popen, object]:
    from optiq_tui.server.process import connect

    env = {**os.environ, "OPTIQ_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "optiq_tui", "serve", "--idle-timeout", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    os.environ["OPTIQ_HOME"] = str(home)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        client = connect()
        if client is not None:
            return proc, client
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("the engine did not start")


# A fresh TUI process: seconds from its start to the library's first frame, and to its engine.
FIRST_PAINT = """
import time
t0 = time.perf_counter()
import gc
gc.disable()  # as optiq-chat starts its TUI (cli.main); the app turns it back on after its first frame
import asyncio, json
from pathlib import Path
import optiq_tui.ui.app
from optiq_tui.ui.app import OptiqApp

marks = {}

class Timed(OptiqApp):
    CSS_PATH = str(Path(optiq_tui.ui.app.__file__).with_name("app.tcss"))

    def on_mount(self):
        super().on_mount()
        self.call_after_refresh(lambda: marks.setdefault("paint", time.perf_counter() - t0))

async def main():
    app = Timed()
    async with app.run_test(size=(100, 30)) as pilot:
        while "paint" not in marks or app.engine is None:
            await pilot.pause(0.01)
        marks["connected"] = time.perf_counter() - t0
        marks["engine"] = await app.engine_text()
    print(json.dumps(marks))

asyncio.run(main())
"""


def first_paint(home: Path, in_process: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "OPTIQ_ENGINE"}
    env["OPTIQ_HOME"] = str(home)
    if in_process:
        env["OPTIQ_ENGINE"] = "in-process"
    # A file, not -c: Textual finds an App subclass's CSS next to its source file.
    script = home / "first_paint.py"
    script.write_text(FIRST_PAINT)
    out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                         timeout=300, cwd=Path(__file__).resolve().parents[1])
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


@contextmanager
def environment(**values: str | None) -> Iterator[None]:
    saved = dict(os.environ)
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# The floor under any TUI's first paint here: Python and Textual, a header with the same title.
TEXTUAL_FLOOR = """
from textual.app import App
from textual.widgets import Footer, Header


class Floor(App):
    TITLE = "optiq-chat"

    def compose(self):
        yield Header()
        yield Footer()


Floor().run()
"""


def reap_engines(home: Path) -> None:
    """Kill every engine process serving ``home``: a TUI measured in the pty may have started one in
    the background just before it was stopped, and it must not run into the next measurement."""
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "optiq_tui" not in cmdline or "serve" not in cmdline:
            continue
        try:
            if proc.environ().get("OPTIQ_HOME") == str(home):
                proc.kill()
                proc.wait(10)
        except psutil.Error:
            pass


def first_paint_rounds(attach_home: Path, repeats: int) -> dict:
    """Median first paint of `optiq-chat` in a pty (bench_chat's measure: wall seconds and the CPU
    seconds it had used by then), and when it was connected: in-process, attaching to a running
    engine, starting one; and the floor, a bare Textual app in the same pty."""
    import compileall
    import statistics

    from bench_chat import first_paint as pty_paint

    import optiq_tui

    # As installed from a wheel (pip compiles it): an editable checkout run with
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile every module on each start.
    compileall.compile_dir(Path(optiq_tui.__file__).parent, quiet=1)
    floor_script = attach_home / "textual_floor.py"
    floor_script.write_text(TEXTUAL_FLOOR)
    runs: dict[str, list[dict]] = {"floor": [], "in_process": [], "attach": [], "start": []}
    for _ in range(repeats):
        for key in runs:
            if key == "floor":
                wall, cpu = pty_paint([sys.executable, str(floor_script)])
                runs[key].append({"pty_paint": wall, "pty_cpu": cpu})
                continue
            home = attach_home if key != "start" else Path(tempfile.mkdtemp(prefix="bench-paint-"))
            mode = "in-process" if key == "in_process" else None
            with environment(OPTIQ_HOME=str(home), OPTIQ_ENGINE=mode):
                wall, cpu = pty_paint()
            if key == "start":
                reap_engines(home)
            measured = first_paint(home, in_process=key == "in_process")
            if key == "start":
                reap_engines(home)  # the engine that TUI started in the background
            runs[key].append({**measured, "pty_paint": wall, "pty_cpu": cpu})
    out = {}
    for key, rounds in runs.items():
        out[key] = {"paint_s": statistics.median(r["pty_paint"] for r in rounds),
                    "paint_cpu_s": statistics.median(r["pty_cpu"] for r in rounds),
                    "paint_rounds_s": [round(r["pty_paint"], 3) for r in rounds]}
        if key != "floor":
            out[key].update(app_paint_s=statistics.median(r["paint"] for r in rounds),
                            connected_s=statistics.median(r["connected"] for r in rounds),
                            engine=rounds[-1]["engine"])
    return out


def print_first_paint(paint: dict) -> None:
    floor = paint["floor"]
    print("TUI first paint (`optiq-chat` in a pty, process start to the first frame; median;")
    print("CPU: seconds the process had used by then; x floor: against a bare Textual app measured")
    print("in the same rounds), and in a headless app (from its first line: paint, then connected):")
    for key, label in (("in_process", "in-process engine"), ("attach", "attach to a running engine"),
                       ("start", "start an engine")):
        p = paint[key]
        print(f"  {label:<28} paint {p['paint_s']:.3f} s ({p['paint_s'] / floor['paint_s']:.2f}x floor),"
              f" CPU {p['paint_cpu_s']:.3f} s ({p['paint_cpu_s'] / floor['paint_cpu_s']:.2f}x floor)"
              f"   rounds {p['paint_rounds_s']}")
        print(f"  {'':<28} in the app: paint {p['app_paint_s']:.3f} s, connected {p['connected_s']:.3f} s"
              f"   [{p['engine']}]")
    print(f"  {'floor: bare Textual app':<28} paint {floor['paint_s']:.3f} s, CPU {floor['paint_cpu_s']:.3f} s"
          f"   rounds {floor['paint_rounds_s']}")
    met = all(paint[key]["paint_s"] < 0.5 for key in ("attach", "start"))
    print(f"  target: paint < 0.5 s when attaching and when starting: {'met' if met else 'NOT met'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="an MLX model folder (default: the demo model)")
    parser.add_argument("--tokens", type=int, default=128, help="most tokens per answer")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per contender")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--first-paint-only", action="store_true", help="only the TUI's first paint")
    args = parser.parse_args()
    if args.first_paint_only:
        home = Path(tempfile.mkdtemp(prefix="bench-engine-"))
        engine, remote = start_engine(home)
        try:
            paint = first_paint_rounds(home, args.repeats)
        finally:
            remote.close()
            engine.kill()
            engine.wait()
        print(json.dumps(paint, indent=2) if args.json else "", end="")
        if not args.json:
            print_first_paint(paint)
        return 0

    from optiq_tui.engine.blas import use_openblas

    use_openblas()  # as optiq-chat does, before anything imports MLX
    from demo_model import demo_dir

    from optiq_tui.engine import loader
    from optiq_tui.engine.client import InProcessClient

    model = str(Path(args.model or demo_dir()).resolve())
    home = Path(tempfile.mkdtemp(prefix="bench-engine-"))
    engine, remote = start_engine(home)
    try:
        loaded = loader.load(model)
        prompt_ids = loaded.format.render(
            [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}], None)
        local = InProcessClient()
        # Warm-up (first-call compilation, model loads); it also fixes the answer's length,
        # so raw generates exactly as many tokens as the clients (greedy: the same ones).
        _, n, _ = client_round(local, model, args.tokens)
        client_round(remote, model, args.tokens)
        raw_round(loaded, prompt_ids, n)
        rounds: dict[str, list[float]] = {"raw": [], "in_process": [], "remote": [],
                                          "remote_engine_side": []}
        cpu: dict[str, list[float]] = {"raw": [], "in_process": [], "remote": []}
        engine_cpu = psutil.Process(engine.pid)
        for _ in range(args.repeats):
            with cpu_seconds(cpu["raw"], n):
                rounds["raw"].append(raw_round(loaded, prompt_ids, n)[0])
            with cpu_seconds(cpu["in_process"], n):
                tps, got, _ = client_round(local, model, args.tokens)
            assert got == n, (got, n)
            rounds["in_process"].append(tps)
            with cpu_seconds(cpu["remote"], n, engine_cpu):
                tps, got, engine_tps = client_round(remote, model, args.tokens)
            assert got == n, (got, n)
            rounds["remote"].append(tps)
            rounds["remote_engine_side"].append(engine_tps)
        local.close()
        paint = first_paint_rounds(home, args.repeats)
    finally:
        engine.kill()
        engine.wait()
    best = {k: max(v) for k, v in rounds.items()}
    cpu_ms = {k: 1000 * min(v) for k, v in cpu.items()}
    result = {"model": model, "tokens": n, "rounds": rounds, "cpu_ms_per_token": cpu_ms,
              "in_process_vs_raw": best["in_process"] / best["raw"],
              "remote_vs_raw": best["remote"] / best["raw"],
              # Same answers, two clocks: what the client saw against what the engine measured;
              # steadier than cross-contender ratios on a shared machine.
              "remote_client_vs_engine_side": min(c / e for c, e in zip(rounds["remote"],
                                                                         rounds["remote_engine_side"])),
              "first_paint": paint}
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{Path(model).name}, greedy, {n} tokens, best of {args.repeats} rounds (tokens/s)")
    for key, label in (("raw", "raw mlx_lm.stream_generate"), ("in_process", "in-process client"),
                       ("remote", "remote client (HTTP)")):
        print(f"  {label:<28} {best[key]:7.1f}   rounds: {', '.join(f'{x:.1f}' for x in rounds[key])}")
    print(f"  in-process / raw = {result['in_process_vs_raw']:.3f}   target >= 0.98")
    print(f"  remote / raw     = {result['remote_vs_raw']:.3f}   target >= 0.95")
    print(f"  remote client / engine's own figure, worst round = {result['remote_client_vs_engine_side']:.3f}")
    print("  CPU time per token, least of the rounds (less load-dependent than wall time): "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in cpu_ms.items()))
    print_first_paint(paint)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
