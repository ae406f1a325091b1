"""The sensitivity measurements, kept so another budget of the same model takes seconds.

Keyed by what the numbers depend on: the source weights (config and
safetensors headers, which hold every tensor's dtype, shape and offset, plus
file sizes), the calibration tokens, the group size, the widths, and the
versions of the method and of the measurement forward it ran on.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

from optiq_tui.quant.backbone import MEASUREMENT_VERSION
from optiq_tui.quant.config import Width
from optiq_tui.settings import paths

METHOD_VERSION = "fisher-seq-v2"  # v2: widths at other groups, keyed "4g128"


def source_fingerprint(folder: Path) -> str:
    h = hashlib.sha256()
    h.update((folder / "config.json").read_bytes())
    for f in sorted(folder.glob("model*.safetensors")):
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            h.update(fh.read(n))
        h.update(str(f.stat().st_size).encode())
    return h.hexdigest()[:16]


def _keyed(record: dict) -> dict:
    """JSON keys of widths: "4" at the run's group, "4g128" at another (json would write both "4")."""
    out = dict(record)
    for field in ("scores", "probes"):
        if field in record:
            out[field] = {p: {repr(b): v for b, v in d.items()} for p, d in record[field].items()}
    return out


def _width(key: str) -> int:
    bits, _, group = key.partition("g")
    return Width(int(bits), int(group)) if group else int(bits)


def cache_key(fingerprint: str, calibration_digest: str, group_size: int,
              widths: tuple[int, ...], dequantized: bool) -> str:
    raw = json.dumps([METHOD_VERSION, MEASUREMENT_VERSION, fingerprint, calibration_digest, group_size,
                      [repr(w) for w in sorted(widths, key=lambda w: (int(w), repr(w)))], dequantized])
    return hashlib.sha256(raw.encode()).hexdigest()[:24]


def cache_path(key: str, kind: str = "sensitivity") -> Path:
    folder = paths().cache / kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.json"


def load_scores(key: str) -> dict | None:
    """The cached record, or None (also for a damaged file, which is then ignored)."""
    try:
        raw = json.loads(cache_path(key).read_text())
        raw["scores"] = {p: {_width(b): float(v) for b, v in d.items()} for p, d in raw["scores"].items()}
        raw["probes"] = {p: {_width(b): float(v) for b, v in d.items()} for p, d in raw.get("probes", {}).items()}
        return raw
    except (OSError, ValueError, KeyError, AttributeError):
        return None


def save_scores(key: str, record: dict) -> Path:
    return save_record(cache_path(key), record)


def save_record(path: Path, record: Any) -> Path:
    """Write JSON atomically; a Ctrl-C mid-write keeps the old file or none."""
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_keyed(record)))
    os.replace(tmp, path)
    return path
