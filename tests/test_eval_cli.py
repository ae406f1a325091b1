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
    assert q4["kl_low"] <= q4["mean_kl"] <= q4["kl_high"] and q4["ppl_ratio"] > 0
    assert q4["flip_prompts"] == 20 and q4["flips"] == len(q4["flipped"])
    assert report["settings"]["flips"] is True
    text = md.read_text()
    assert "| tiny-q4 |" in text and f"| {q4['flips']}/20 |" in text
    assert "KL 95% CI" in text and "bootstrap over sequences" in text


def test_eval_no_flips_and_old_reports_still_load(tiny_llama_dir, quant_dir, capsys):
    from optiq_tui.eval import reports

    rc = main(["eval", str(quant_dir), "--reference", str(tiny_llama_dir), "--no-retrieval",
               "--no-flips", "--max-tokens", "600", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"][1]["flips"] is None and report["settings"]["flips"] is False
    # A report saved before receipts: no interval, ratio or flips fields.
    receipts = ("kl_low", "kl_high", "ppl_ratio", "flips", "flip_prompts", "flipped")
    for row in report["rows"]:
        for key in receipts:
            row.pop(key)
    for key in ("flips", "flip_tokens"):
        report["settings"].pop(key)
    old = reports.report_from_dict(report)
    assert old.rows[1].kl_low is None and reports.table_rows(old)[2][4] == "—"


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
