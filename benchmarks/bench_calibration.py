"""Which calibration mix generalises: held-out chat and held-out prose, on the demo.

Calibration reaches a quant through what it measures and what it compensates.
This isolates the second: every row is uniform 4-bit g64 with the block layers
error-compensated (quant/plus.py) on one mix, the embedding / tied head
rounded to nearest as in the baseline; the mixes get the same number of
calibration tokens. Mean KL to the source on the held-out prose
(data/heldout.txt) and the held-out chat conversations (data/heldout_chat.json,
in the model's chat template), each as a ratio to round-to-nearest uniform
4-bit. Computed as quantize-then-dequantize in float32.

Mixes: text (the shipped prose, code and math), chat (the shipped chat and
tool-call turns), shipped (today's interleaved set), self (the source's own
greedy answers to the shipped chat prompts), shipped+self (both interleaved).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0 \\
        python benchmarks/bench_calibration.py [--mixes text,chat,shipped,self,shipped+self]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MIXES = ("text", "chat", "shipped", "self", "shipped+self")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mixes", default=",".join(MIXES))
    parser.add_argument("--max-sequences", type=int, default=8, help="calibration sequences of 512")
    parser.add_argument("--heldout-tokens", type=int, default=4096)
    args = parser.parse_args()

    import mlx.core as mx
    import mlx_lm

    from benchmarks.demo_model import demo_dir
    from optiq_tui.measures.metrics import kl_interval, token_kl
    from optiq_tui.measures.texts import heldout_chat_tokens, heldout_tokens
    from optiq_tui.quant.calibration import build_calibration, shipped_documents
    from optiq_tui.quant.layers import get_module, qdq
    from optiq_tui.quant.plus import compensate_model
    from optiq_tui.quant.self_answers import self_answer_documents

    folder = str(demo_dir())
    source, tok = mlx_lm.load(folder)
    source.set_dtype(mx.float32)
    paths = [p for p, m in source.named_modules() if hasattr(m, "to_quantized") and "weight" in m and p]
    block_paths = [p for p in paths if ".layers." in p]
    held = {"prose": heldout_tokens(tok, max_tokens=args.heldout_tokens, seq_len=512),
            "chat": heldout_chat_tokens(tok, max_tokens=args.heldout_tokens, seq_len=512)}
    refs = {k: [source(mx.array([s])) for s in seqs] for k, seqs in held.items()}
    for r in refs.values():
        mx.eval(r)

    shipped = shipped_documents()
    t0 = time.perf_counter()
    own = self_answer_documents(source, tok, shipped)
    answer_s = time.perf_counter() - t0
    mixes = {
        "text": [d for d in shipped if "messages" not in d],
        "chat": [d for d in shipped if "messages" in d],
        "shipped": shipped,
        "self": own,
        "shipped+self": [d for pair in zip(shipped, own) for d in pair] + shipped[len(own):],
    }
    wanted = [m for m in args.mixes.split(",") if m]
    cals = {m: build_calibration(tok, documents=mixes[m], n_sequences=10**6, held_back=0).sequences
            for m in wanted}
    n = min(args.max_sequences, *(len(c) for c in cals.values()))
    print(f"demo: {len(own)} self answers in {answer_s:.0f} s; every mix cut to {n} sequences of "
          f"512 tokens (available: {', '.join(f'{m} {len(c)}' for m, c in cals.items())}); held-out "
          f"{sum(map(len, held['prose']))} prose and {sum(map(len, held['chat']))} chat tokens", flush=True)

    def rtn(model, which):
        for p in which:
            layer = get_module(model, p)
            layer.weight = qdq(layer.weight, 4, 64)

    def kl_means(model) -> dict[str, float]:
        out = {}
        for k, seqs in held.items():
            per_seq = [token_kl(r, model(mx.array([s]))) for r, s in zip(refs[k], seqs)]
            mx.eval(per_seq)
            out[k] = kl_interval(per_seq).mean
        return out

    base_model, _ = mlx_lm.load(folder)
    rtn(base_model, paths)
    base_model.set_dtype(mx.float32)
    base = kl_means(base_model)
    del base_model
    print(f"round to nearest uniform 4-bit: mean KL prose {base['prose']:.4f}, chat {base['chat']:.4f}")
    print(f"{'mix':<14} {'prose KL ratio':>15} {'chat KL ratio':>14} {'compensate s':>13}")
    for m in wanted:
        model, _ = mlx_lm.load(folder)
        t0 = time.perf_counter()
        compensate_model(model, {p: 4 for p in block_paths}, 64, cals[m][:n])
        seconds = time.perf_counter() - t0
        rtn(model, [p for p in paths if p not in block_paths])
        model.set_dtype(mx.float32)
        kl = kl_means(model)
        print(f"{m:<14} {kl['prose'] / base['prose']:>15.3f} {kl['chat'] / base['chat']:>14.3f} "
              f"{seconds:>13.0f}", flush=True)
        del model
    return 0


if __name__ == "__main__":
    sys.exit(main())
