"""`optiq-chat plan` is a face of the engine's plan job: the same answer as the planner, one
line for bad input, on both clients (in-process, and the engine process the command finds)."""

from __future__ import annotations

import json

import pytest

from optiq_tui.cli import main
from optiq_tui.quant.plan import model_memory, parse_memory, plan
from optiq_tui.sizes import human_bytes


def _plan_jobs(engine_kind: str) -> list[dict]:
    """The plan jobs the engine process ran (none for the in-process client)."""
    if engine_kind == "in-process":
        return []
    from optiq_tui.server.process import connect

    engine = connect()
    try:
        return [j.args for j in engine.jobs() if j.kind == "plan"]
    finally:
        engine.close()


def test_plan_prints_the_engines_plan(tiny_llama_dir, engine_kind, capsys):
    want = plan(model_memory(tiny_llama_dir), parse_memory("19.9MB"), 1024, kv_bits=8)
    assert not want.unquantized_fits  # the budget forces a quant: both lines are printed

    assert main(["plan", str(tiny_llama_dir), "--memory", "19.9MB", "--context", "1024", "--kv-bits", "8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        f"tiny-llama fits in {human_bytes(want.memory)} at 1024 tokens as a {want.target_bpw:.2f} bpw quant "
        f"(peak {human_bytes(want.peak.total)}: weights {human_bytes(want.peak.weights)}, 8-bit KV cache "
        f"{human_bytes(want.peak.kv_cache)}, working memory {human_bytes(want.peak.working)})")
    assert lines[1] == f"optiq-chat quantize {tiny_llama_dir} --target-bpw {want.target_bpw:.2f} --kv-bits 8"

    assert main(["plan", str(tiny_llama_dir), "--memory", "40MB", "--context", "2048", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == plan(model_memory(tiny_llama_dir), parse_memory("40MB"), 2048).to_dict()
    assert out["model"] == "tiny-llama" and out["peak"]["total"] <= 40 * 10**6

    if engine_kind == "process":
        # Both plans ran in the engine process, the folder given as an absolute path.
        assert [a["memory"] for a in _plan_jobs(engine_kind)] == ["19.9MB", "40MB"]


@pytest.mark.parametrize("argv,says", [
    (["no-such-model", "--memory", "16GB"], "no model named 'no-such-model'"),
    (["{tiny}", "--memory", "lots"], "cannot read a memory size from 'lots'; write it like 16GB"),
    (["{tiny}", "--memory", "1KB"], "does not fit in 1.0 KB"),
    (["{tiny}", "--memory", "16GB", "--kv-bits", "7"], "--kv-bits 7 is not a width"),
    (["{tiny}", "--memory", "16GB", "--context", "0"], "the context must be at least one token"),
])
def test_bad_input_is_one_line(tiny_llama_dir, engine_kind, capsys, argv, says):
    argv = [a.replace("{tiny}", str(tiny_llama_dir)) for a in argv]
    assert main(["plan", *argv]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and says in captured.err
    assert len(captured.err.strip().splitlines()) == 1 and captured.out == ""
    assert main(["plan", *argv, "--json"]) == 1
    assert says in json.loads(capsys.readouterr().out)["error"]
