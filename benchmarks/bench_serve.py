"""The OpenAI-compatible API's speed on the demo model, in one run, against raw mlx-lm.

- single stream: tokens/s a streaming `openai` client sees through `POST /v1/chat/completions`
  (engine process, HTTP, SSE) against `mlx_lm.stream_generate` on the same prompt ids in this
  process, greedy, the same number of tokens; best round of each (target >= 0.95);
- concurrency: aggregate tokens/s of 4 streaming clients at once (4 different questions)
  against one client alone (target >= 2x with batching);
- sameness: each concurrent answer against the same request run alone at temperature 0;
  where they differ, the first differing token and the gap between the two top logits there
  (a near-tie that batched arithmetic can flip).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
        python benchmarks/bench_serve.py --tokens 128 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

QUESTIONS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a bicycle stays upright while moving.",
    "Describe a walk through a forest in autumn.",
    "What should a beginner know before baking bread?",
]


def start_engine(home: Path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OPTIQ_HOME": str(home)}
    proc = subprocess.Popen([sys.executable, "-m", "optiq_tui", "serve", "--idle-timeout", "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    record = home / "state" / "engine.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            return proc, json.loads(record.read_text())["address"]
        except (FileNotFoundError, ValueError, KeyError):
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the engine did not start")


def stream_once(client, model: str, question: str, tokens: int) -> tuple[str, int, float, float, float]:
    """(text, tokens, tokens/s between the first and last delta, start, end) of one streamed answer."""
    start = time.perf_counter()
    first = last = None
    parts: list[str] = []
    usage = None
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], temperature=0.0,
            max_tokens=tokens, stream=True, stream_options={"include_usage": True}):
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            last = time.perf_counter()
            first = first or last
            parts.append(chunk.choices[0].delta.content)
    end = time.perf_counter()
    n = usage.completion_tokens
    # Deltas can lag a token behind (detokenizer): n - 1 token intervals between first and last.
    return "".join(parts), n, (n - 1) / (last - first), start, end


def raw_round(loaded, prompt_ids: list[int], tokens: int) -> tuple[float, list[int]]:
    import mlx.core as mx
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler

    ids, first, last = [], None, None
    for r in stream_generate(loaded.model, loaded.tokenizer, mx.array(prompt_ids), max_tokens=tokens,
                             sampler=make_sampler(temp=0.0)):
        last = time.perf_counter()
        first = first or last
        ids.append(r.token)
    return (len(ids) - 1) / (last - first), ids


def top_gap(loaded, prompt_ids: list[int], answer_ids: list[int], at: int) -> float:
    """Difference between the two largest logits where token ``at`` of the answer was chosen."""
    import mlx.core as mx

    logits = loaded.model(mx.array([prompt_ids + answer_ids[:at]]))[0, -1].astype(mx.float32)
    top = mx.sort(logits)[-2:]
    return float(top[1] - top[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=128, help="tokens per answer")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of the single-stream comparison")
    args = parser.parse_args()

    from optiq_tui.engine.blas import use_openblas

    use_openblas()  # as optiq-chat does, before anything imports MLX
    import openai
    from demo_model import demo_dir

    from optiq_tui.engine import loader

    model_dir = Path(demo_dir()).resolve()
    home = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    (home / "models").mkdir(parents=True)
    (home / "models" / model_dir.name).symlink_to(model_dir)
    engine, address = start_engine(home)
    client = openai.OpenAI(base_url=f"{address}/v1", api_key="loopback", max_retries=0, timeout=600)
    name = model_dir.name
    try:
        loaded = loader.load(model_dir)
        prompts = [loaded.format.render([{"role": "user", "content": q}]) for q in QUESTIONS]
        # Warm-up: first-call compilation here and in the engine (which also loads the model).
        raw_round(loaded, prompts[0], 8)
        stream_once(client, name, QUESTIONS[0], 8)
        raw, http = [], []
        for _ in range(args.repeats):
            raw.append(raw_round(loaded, prompts[0], args.tokens)[0])
            http.append(stream_once(client, name, QUESTIONS[0], args.tokens)[2])
        solo = [stream_once(client, name, q, args.tokens) for q in QUESTIONS]
        together: list = [None] * len(QUESTIONS)

        def ask(i: int) -> None:
            together[i] = stream_once(client, name, QUESTIONS[i], args.tokens)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(QUESTIONS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # One client: the best of the four questions asked alone (conservative on a shared machine).
        one_tps = max(n / (end - start) for _text, n, _tps, start, end in solo)
        wall = max(r[4] for r in together) - min(r[3] for r in together)
        all_tps = sum(r[1] for r in together) / wall
        print(f"{name}, greedy, {args.tokens} tokens")
        print(f"  single stream, best of {args.repeats} (tokens/s): raw mlx_lm.stream_generate {max(raw):.1f}, "
              f"HTTP {max(http):.1f}; HTTP / raw = {max(http) / max(raw):.3f} (target >= 0.95)")
        print(f"    rounds raw: {', '.join(f'{x:.1f}' for x in raw)}; HTTP: {', '.join(f'{x:.1f}' for x in http)}")
        print(f"  4 concurrent clients: {all_tps:.1f} tokens/s aggregate (tokens over wall time, prefill "
              f"included) vs one client alone, best of the 4 questions, {one_tps:.1f}; ratio "
              f"{all_tps / one_tps:.2f} (target >= 2)")
        for i, (alone, batched) in enumerate(zip(solo, together)):
            if alone[0] == batched[0]:
                print(f"  question {i + 1}: same text as alone ({batched[1]} tokens)")
                continue
            tok = loaded.tokenizer
            a_ids = tok.encode(alone[0], add_special_tokens=False)
            b_ids = tok.encode(batched[0], add_special_tokens=False)
            at = next((k for k, (x, y) in enumerate(zip(a_ids, b_ids)) if x != y), min(len(a_ids), len(b_ids)))
            gap = top_gap(loaded, prompts[i], a_ids, at)
            print(f"  question {i + 1}: differs from alone at token {at}; top-2 logit gap there {gap:.4f}")
    finally:
        engine.kill()
        engine.wait()
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
