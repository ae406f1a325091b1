"""What the engine runs on: backend, BLAS, memory, versions, and advice."""

from __future__ import annotations

import platform
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata


@dataclass(frozen=True)
class Diagnostics:
    backend: str
    device: str
    blas: str
    memory_available_bytes: int
    memory_source: str
    memory_total_bytes: int
    platform: str
    python: str
    versions: dict[str, str] = field(default_factory=dict)
    advice: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def doctor() -> Diagnostics:
    """Inspect this process: imports MLX (call it off the UI's first paint)."""
    import mlx.core as mx
    import psutil

    from optiq_tui.engine.blas import find_openblas, loaded_blas
    from optiq_tui.engine.loader import available_memory

    metal = bool(getattr(mx, "metal", None) and mx.metal.is_available())
    info = {}
    try:
        info = mx.device_info()
    except (AttributeError, RuntimeError):
        pass
    backend = "Metal (GPU)" if metal else "CPU"
    device = str(info.get("device_name") or info.get("architecture") or mx.default_device())
    blas = loaded_blas()
    have, source = available_memory()
    advice: list[str] = []
    if sys.platform.startswith("linux") and "OpenBLAS" not in blas:
        if find_openblas() is None:
            advice.append(
                "float32 work uses the slow reference BLAS bundled with mlx-cpu (about 30x slower): "
                "install OpenBLAS (Debian/Ubuntu: `sudo apt install libopenblas0-pthread`) and "
                "optiq-chat will preload it."
            )
        else:
            advice.append(
                f"OpenBLAS is installed ({find_openblas()}) but not loaded in this process: run via "
                "`optiq-chat` (it preloads it) or start Python with LD_PRELOAD set to that file; "
                "unset OPTIQ_NO_OPENBLAS if you set it."
            )
    if not metal and sys.platform == "darwin":
        advice.append("Metal is not available: MLX runs on the CPU, which is much slower on a Mac.")
    versions = {name: _version(name) for name in ("mlx", "mlx-lm", "textual", "openai-harmony", "optiq-tui")}
    if sys.platform.startswith("linux"):
        versions["mlx-cpu"] = _version("mlx-cpu")
    return Diagnostics(
        backend=backend,
        device=device,
        blas=blas,
        memory_available_bytes=have,
        memory_source=source,
        memory_total_bytes=int(psutil.virtual_memory().total),
        platform=f"{platform.system()} {platform.machine()}",
        python=platform.python_version(),
        versions=versions,
        advice=advice,
    )
