"""A fast BLAS for MLX's float32 CPU work on Linux.

The mlx-cpu wheel bundles the reference (netlib) BLAS, about 30x slower than
OpenBLAS for float32 matmuls. The dynamic loader can only swap the library at
process start (LD_PRELOAD), so the CLI re-executes itself once with it when
the system has OpenBLAS and the user has not opted out.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Debian/Ubuntu (libopenblas0-pthread), Fedora (openblas), Arch; first hit wins.
OPENBLAS_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/openblas-pthread/libopenblas.so.0",
    "/usr/lib/x86_64-linux-gnu/libopenblas.so.0",
    "/usr/lib/aarch64-linux-gnu/libopenblas.so.0",
    "/usr/lib64/libopenblas.so.0",
    "/usr/lib/libopenblas.so.0",
)
_MARKER = "OPTIQ_BLAS_REEXEC"


def find_openblas() -> Path | None:
    """The system's OpenBLAS shared library, if it has one (Linux only)."""
    if not sys.platform.startswith("linux"):
        return None
    for candidate in OPENBLAS_CANDIDATES:
        if Path(candidate).exists():
            return Path(candidate)
    return None


def loaded_blas() -> str:
    """Which BLAS this process has mapped: 'Accelerate', 'OpenBLAS (path)' or 'reference'."""
    if sys.platform == "darwin":
        return "Accelerate"
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for line in maps.splitlines():
        if "libopenblas" in line:
            return f"OpenBLAS ({line.split()[-1]})"
    return "reference BLAS bundled with mlx-cpu (slow)"


def maybe_reexec_with_openblas() -> None:
    """Restart this process with OpenBLAS preloaded, when it helps and is allowed.

    Skipped on macOS, when ``OPTIQ_NO_OPENBLAS`` is set, when already done,
    and when no OpenBLAS is installed.
    """
    if os.environ.get("OPTIQ_NO_OPENBLAS") or os.environ.get(_MARKER):
        return
    lib = find_openblas()
    if lib is None or "libopenblas" in os.environ.get("LD_PRELOAD", ""):
        return
    env = dict(os.environ)
    env[_MARKER] = "1"
    env["LD_PRELOAD"] = ":".join(p for p in (str(lib), env.get("LD_PRELOAD", "")) if p)
    try:
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    except OSError:
        return  # keep running with the slow BLAS rather than fail
