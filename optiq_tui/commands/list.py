"""`optiq-chat list`: the models in the library and the Hugging Face cache."""

from __future__ import annotations

import argparse
import json

HELP = "list the MLX models on this machine (library and Hugging Face cache)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-hf-cache", action="store_true", help="only the app's own models folder")


def run(args: argparse.Namespace) -> int:
    from optiq_tui.sizes import human_bytes, human_count
    from optiq_tui.library.catalog import scan

    catalog = scan(include_hf_cache=not args.no_hf_cache)
    if args.json:
        print(json.dumps({
            "models": [m.to_dict() for m in catalog.models],
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in catalog.skipped],
        }, indent=2))
        return 0
    if not catalog.models:
        print("no models yet: `optiq-chat demo` gets a small one, `optiq-chat pull REPO` downloads one, "
              "`optiq-chat import FILE.gguf` imports a GGUF file")
    rows = [("NAME", "TYPE", "PARAMS", "SIZE", "BPW", "QUANT", "CHAT", "CONTEXT", "WHERE")]
    for m in catalog.models:
        rows.append((m.name, m.model_type, human_count(m.n_params), human_bytes(m.size_bytes),
                     f"{m.bpw:.2f}", m.quant, m.chat_format, str(m.context_length or "-"), m.source))
    if catalog.models:
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    for s in catalog.skipped:
        print(f"skipped {s.path}: {s.reason}")
    return 0
