"""Eval reports: saved JSON round-trips, Markdown export, idempotent model-card section."""

from __future__ import annotations

import json

from optiq_tui.eval.results import EvalReport, EvalSettings, ModelEval
from optiq_tui.eval.reports import (
    CARD_END,
    CARD_START,
    export,
    list_reports,
    load_report,
    save_report,
    to_markdown,
    update_model_card,
    update_optiq_cards,
)
from optiq_tui.eval.retrieval import ProbeCase


def _report(quant_dir, kl=0.0123) -> EvalReport:
    case = ProbeCase(512, 1, 5121, 530, "Ab12Cd", "Ab12Cd", 1.0)
    return EvalReport(
        rows=[
            ModelEval("base", 16.0, 270_000_000, 0.0, 0.0, 12.5, 1.0, 1.0, "/m/base", "bf16", True, 5000, (case,)),
            ModelEval("base-optiq", 5.0, 90_000_000, kl, 0.2, 12.9, 0.93, 1.0, str(quant_dir), "OptiQ 4/8", False, 5000, (case,),
                      kl_low=0.0101, kl_high=0.0150, ppl_ratio=12.9 / 12.5, flips=1, flip_prompts=20,
                      flipped=(("What is the capital of France?", "Paris.", "Monaco."),)),
        ],
        reference="base",
        settings=EvalSettings(512, 8192, "shipped held-out text", 10, 5000, "float32", True, (512,), (1,), 1,
                              flips=True, flip_tokens=24),
        created="2026-11-26T21:00:00+00:00",
    )


def test_saved_report_round_trips_with_date_and_settings(tmp_path):
    report = _report(tmp_path)
    path = save_report(report)
    assert path in list_reports()
    assert load_report(path) == report
    data = json.loads(path.read_text())
    assert data["created"] == report.created and data["settings"]["seq_len"] == 512


def test_markdown_and_json_export(tmp_path):
    report = _report(tmp_path)
    md = export(report, tmp_path / "eval.md").read_text()
    assert md == to_markdown(report)
    assert ("| base-optiq | 5.00 | 90.0 MB | 0.0123 | 0.0101–0.0150 | 0.2000 | 12.90 | 1.032 | 93.0% "
            "| 1/20 | 100% |") in md
    assert "- base-optiq: “What is the capital of France?” → “Monaco.” (reference: “Paris.”)" in md
    assert "512 tok, 1 hop" in md
    assert load_report(export(report, tmp_path / "eval.json")) == report


def test_model_card_section_is_idempotent_and_keeps_the_card(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# base-optiq\n\nPer-layer allocation...\n")
    update_model_card(tmp_path, _report(tmp_path))
    once = readme.read_text()
    update_model_card(tmp_path, _report(tmp_path))
    assert readme.read_text() == once
    assert once.startswith("# base-optiq\n\nPer-layer allocation...\n")
    assert once.count(CARD_START) == 1 and once.count(CARD_END) == 1
    update_model_card(tmp_path, _report(tmp_path, kl=0.0456))  # a newer eval replaces the old figures
    newer = readme.read_text()
    assert "0.0456" in newer and "0.0123" not in newer and newer.count(CARD_START) == 1


def test_only_optiq_quants_get_the_figures(tmp_path):
    report = _report(tmp_path)
    assert update_optiq_cards(report) == []
    (tmp_path / "optiq_quant.json").write_text("{}")
    assert update_optiq_cards(report) == [tmp_path / "README.md"]
