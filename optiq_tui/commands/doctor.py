"""`optiq-chat doctor`: what the engine runs on (backend, BLAS, memory, versions)."""

from __future__ import annotations

import argparse
import json

HELP = "show the MLX backend, the BLAS in use, available memory and versions, with advice"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _gb(n: int) -> str:
    return f"{n / 2**30:.1f} GB"


def run(args: argparse.Namespace) -> int:
    from optiq_tui.engine.diagnostics import doctor

    diag = doctor()
    if args.json:
        print(json.dumps(diag.to_dict(), indent=2))
        return 0
    rows = [
        ("backend", f"{diag.backend} ({diag.device})"),
        ("BLAS", diag.blas),
        ("memory", f"{_gb(diag.memory_available_bytes)} available ({diag.memory_source}) of {_gb(diag.memory_total_bytes)}"),
        ("platform", f"{diag.platform}, Python {diag.python}"),
        *((name, version) for name, version in diag.versions.items()),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    for line in diag.advice:
        print(f"\nadvice: {line}")
    return 0
