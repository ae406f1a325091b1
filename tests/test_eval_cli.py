"""`optiq-chat eval` and `optiq-chat compare` headless, with --json."""

from __future__ import annotations

import json

import pytest

from optiq_tui.cli import main


@pytest.fixture(scope="module")
def quant_dir(tiny_llama_dir, tmp_path_factory):
    from mlx_lm import convert

    out = tmp_path_factory.mktemp("cli") / "tiny-q4"
    convert(str(tiny_llama_dir), str(out), quantize=True, q_bits=4, q_group_size=64)
    return out


def test_eval_json_and_markdown(tiny_llama_dir, quant_dir, tmp_path, capsys):
    md = tmp_path / "eval.md"
    rc = main(
        ["eval", str(quant_dir), "--reference", str(tiny_llama_dir), "--no-retrieval",
         "--max-tokens", "600", "--json", "--markdown", str(md)]
    )
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    ref, q4 = report["rows"]
    assert ref["is_reference"] and q4["mean_kl"] > 0 and 0 < q4["top1"] < 1
    assert report["settings"]["retrieval"] is False
    assert "| tiny-q4 |" in md.read_text()


def test_eval_of_a_missing_model_fails_cleanly(capsys):
    assert main(["eval", "no-such-model", "--json"]) == 1
    assert "no model named" in capsys.readouterr().err


def test_compare_json(tiny_llama_dir, quant_dir, capsys):
    rc = main(["compare", str(tiny_llama_dir), str(quant_dir), "Hello", "--max-tokens", "8", "--seed", "3", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["a"]["finished"]["reason"] in ("stop", "length")
    assert out["b"]["finished"]["stats"]["gen_tokens"] <= 8
    assert out["both_loaded"] is True and out["sampler"]["seed"] == 3
    assert out["agreement"]["common_prefix"] >= 0
