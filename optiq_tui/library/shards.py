"""Write a model's arrays as safetensors shards (plus the index mlx-lm reads) while they are made.

Writing shard by shard keeps memory bounded when a converter produces one
tensor at a time (GGUF import); the files are named as mlx-lm names them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SHARD_BYTES = 2 << 30


class ShardWriter:
    """Collects arrays and writes ~2 GiB safetensors shards plus the index mlx-lm reads."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.pending: dict[str, Any] = {}
        self.pending_bytes = 0
        self.shards: list[dict[str, Any]] = []

    def add(self, name: str, array) -> None:
        self.pending[name] = array
        self.pending_bytes += array.nbytes
        if self.pending_bytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        import mlx.core as mx

        if not self.pending:
            return
        path = self.folder / f"shard-{len(self.shards):05d}.safetensors"
        mx.save_safetensors(str(path), self.pending, metadata={"format": "mlx"})
        self.shards.append({"path": path, "names": list(self.pending), "bytes": self.pending_bytes})
        self.pending, self.pending_bytes = {}, 0

    def finish(self) -> None:
        self.flush()
        n = len(self.shards)
        weight_map, total = {}, 0
        for i, shard in enumerate(self.shards, 1):
            name = "model.safetensors" if n == 1 else f"model-{i:05d}-of-{n:05d}.safetensors"
            os.replace(shard["path"], self.folder / name)
            weight_map.update({k: name for k in shard["names"]})
            total += shard["bytes"]
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
