"""A fast BLAS for MLX's float32 CPU work on Linux.

The mlx-cpu wheel bundles the reference (netlib) BLAS, about 30x slower than
OpenBLAS for float32 matmuls. ``libmlx.so`` finds ``cblas_*`` through the
dynamic loader, which searches libraries opened with ``RTLD_GLOBAL`` before a
library's own dependencies; so opening the system OpenBLAS that way before
MLX is first imported makes MLX use it. That costs ~10 ms in-process, where
re-executing Python with ``LD_PRELOAD`` cost a second interpreter start on
the way to the TUI's first paint.
"""

from __future__ import annotations

import os
import sys
import threading
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
_lock = threading.Lock()
_done = False


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


def use_openblas() -> bool:
    """Make MLX use the system OpenBLAS, when it helps and is allowed; True if it will.

    Call before MLX is first imported (later calls cannot rebind it and do
    nothing). Thread-safe and idempotent. Skipped on macOS, when
    ``OPTIQ_NO_OPENBLAS`` is set and when no OpenBLAS is installed.
    """
    global _done
    with _lock:
        if _done:
            return "OpenBLAS" in loaded_blas()
        _done = True
        if os.environ.get("OPTIQ_NO_OPENBLAS") or "mlx.core" in sys.modules:
            return "OpenBLAS" in loaded_blas()
        lib = find_openblas()
        if lib is None:
            return False
        if "libopenblas" in os.environ.get("LD_PRELOAD", ""):
            return True
        import ctypes

        try:
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        except OSError:
            return False  # keep running with the slow BLAS rather than fail
        return True
