"""Eval reports on disk: saved JSON with date and settings, Markdown/JSON export,
and the eval figures in an OptiQ quant's model card."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from optiq_tui.measures.receipts import figure
from optiq_tui.eval.results import EvalReport, EvalSettings, ModelEval
from optiq_tui.eval.retrieval import ProbeCase
from optiq_tui.progress import OptiqError
from optiq_tui.settings import paths
from optiq_tui.sizes import human_bytes
from optiq_tui.library.model_files import OPTIQ_QUANT_FILE

CARD_START = "<!-- optiq-eval:start -->"
CARD_END = "<!-- optiq-eval:end -->"


def reports_dir() -> Path:
    folder = paths().eval_reports
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def report_to_dict(report: EvalReport) -> dict[str, Any]:
    return asdict(report)


def report_from_dict(data: dict[str, Any]) -> EvalReport:
    rows = []
    for r in data["rows"]:
        cases = tuple(ProbeCase(**c) for c in r.get("retrieval_cases", ()))
        flipped = tuple(tuple(f) for f in r.get("flipped", ()))
        rows.append(ModelEval(**{**r, "retrieval_cases": cases, "flipped": flipped}))
    s = data["settings"]  # reports saved before receipts lack flips / flip_tokens: defaults
    settings = EvalSettings(**{**s, "contexts": tuple(s["contexts"]), "hops": tuple(s["hops"])})
    return EvalReport(
        rows=rows,
        reference=data["reference"],
        settings=settings,
        created=data["created"],
        elapsed_s=data.get("elapsed_s", 0.0),
    )


def save_report(report: EvalReport) -> Path:
    """Write the report under the app's eval folder, named by date and models; return the path."""
    stamp = report.created.replace(":", "").replace("-", "").replace("+0000", "Z")
    names = "-vs-".join(_slug(r.name) for r in report.rows)[:80] or "eval"
    path = reports_dir() / f"{stamp}-{names}.json"
    _write_atomic(path, json.dumps(report_to_dict(report), indent=2))
    return path


def load_report(path: str | Path) -> EvalReport:
    try:
        return report_from_dict(json.loads(Path(path).read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OptiqError(f"cannot read eval report {path}: {exc}") from exc


def list_reports() -> list[Path]:
    """Saved reports, newest first."""
    return sorted(reports_dir().glob("*.json"), reverse=True)


def export(report: EvalReport, path: str | Path) -> Path:
    """Write ``report`` as Markdown (``.md``) or JSON (any other suffix)."""
    out = Path(path).expanduser()
    text = to_markdown(report) if out.suffix.lower() in (".md", ".markdown") else (
        json.dumps(report_to_dict(report), indent=2)
    )
    try:
        _write_atomic(out, text)
    except OSError as exc:
        raise OptiqError(f"cannot write {out}: {exc.strerror}") from exc
    return out


def table_rows(report: EvalReport) -> list[list[str]]:
    """The eval table as text cells (header first), shared by Markdown, CLI and UI."""
    header = ["model", "bpw", "size", "mean KL", "KL 95% CI", "p99 KL", "ppl", "ppl ratio", "top-1",
              "flips", "retrieval"]
    out = [header]
    for r in report.rows:
        out.append(
            [
                r.name + (" (ref)" if r.is_reference else ""),
                f"{r.bpw:.2f}",
                human_bytes(r.size_bytes),
                figure(r.mean_kl, 4),
                kl_ci_text(r),
                figure(r.p99_kl, 4),
                figure(r.ppl, 2),
                figure(r.ppl_ratio, 3),
                "—" if r.top1 is None else f"{100 * r.top1:.1f}%",
                flips_text(r),
                "—" if r.retrieval is None else f"{100 * r.retrieval:.0f}%",
            ]
        )
    return out


def to_markdown(report: EvalReport, *, title: str | None = "Quick eval") -> str:
    rows = table_rows(report)
    lines = [f"## {title}", ""] if title else []
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(rows[0]) - 1)) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    s = report.settings
    lines += ["", settings_line(report)]
    flipped = [(r.name, f) for r in report.rows for f in r.flipped]
    if flipped:
        lines += ["", "Flipped answers (greedy, against the reference):", ""]
        lines += [f"- {name}: “{p}” → {_quote(b)} (reference: {_quote(a)})" for name, (p, a, b) in flipped]
    if s.retrieval:
        lines.append("")
        lines.append(_retrieval_table(report))
    return "\n".join(lines) + "\n"


def update_model_card(model_dir: str | Path, report: EvalReport) -> Path:
    """Put the eval figures into ``model_dir/README.md``, replacing an earlier eval section.

    Idempotent: the section sits between fixed markers, so running it again
    with the same report leaves the file unchanged.
    """
    readme = Path(model_dir) / "README.md"
    section = f"{CARD_START}\n{to_markdown(report, title='Measured quality (optiq-chat eval)')}{CARD_END}\n"
    old = readme.read_text(encoding="utf-8") if readme.exists() else ""
    pattern = re.compile(re.escape(CARD_START) + r".*?" + re.escape(CARD_END) + r"\n?", re.DOTALL)
    if pattern.search(old):
        new = pattern.sub(lambda _m: section, old, count=1)
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + ("\n" if old else "") + section
    if new != old:
        _write_atomic(readme, new)
    return readme


def update_optiq_cards(report: EvalReport) -> list[Path]:
    """Update the model card of every OptiQ quant in the report; return the cards written."""
    written = []
    for row in report.rows:
        folder = Path(row.path)
        if row.path and (folder / OPTIQ_QUANT_FILE).exists():
            written.append(update_model_card(folder, report))
    return written


def settings_line(report: EvalReport) -> str:
    s = report.settings
    ref = report.reference or "none (perplexity only)"
    line = (
        f"Reference: {ref}. Text: {s.text}, {s.n_tokens} tokens in {s.n_sequences} sequences "
        f"of up to {s.seq_len}; computed in {s.compute}. KL is KL(reference ‖ model) in nats "
        f"per token; its 95% CI is a bootstrap over sequences."
    )
    if s.flips:
        line += (f" Flips: shipped greedy prompts (answers of up to {s.flip_tokens} tokens) "
                 "answered right where the reference is wrong, or wrong where it is right.")
    return line + f" Date: {report.created}."


def kl_ci_text(row: ModelEval) -> str:
    """The 95% interval of a row's mean KL, "—" when there is none."""
    if row.kl_low is None or row.kl_high is None:
        return "—"
    return f"{row.kl_low:.4f}–{row.kl_high:.4f}"


def flips_text(row: ModelEval) -> str:
    """"changed/asked", "—" when flips were not run."""
    return "—" if row.flips is None else f"{row.flips}/{row.flip_prompts}"


def _retrieval_table(report: EvalReport) -> str:
    cells = sorted({(c.context_tokens, c.hops) for r in report.rows for c in r.retrieval_cases})
    if not cells:
        return "Retrieval probe: no case fit the models' context length."
    head = ["model"] + [f"{ctx} tok, {h} hop" for ctx, h in cells]
    lines = [
        "Retrieval probe (HashHop-style chains, fraction answered exactly):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(cells)) + "|",
    ]
    for r in report.rows:
        scores = {}
        for c in r.retrieval_cases:
            scores.setdefault((c.context_tokens, c.hops), []).append(c.score)
        vals = [
            f"{100 * sum(scores[k]) / len(scores[k]):.0f}%" if k in scores else "—" for k in cells
        ]
        lines.append("| " + " | ".join([r.name, *vals]) + " |")
    return "\n".join(lines)


def _quote(answer: str) -> str:
    text = " ".join(answer.split())
    return f"“{text[:80]}{'…' if len(text) > 80 else ''}”"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-")[:30]


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
