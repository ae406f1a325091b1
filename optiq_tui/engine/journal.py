"""The engine's jobs journal: one JSON line per job state change, fsynced.

When the engine is killed (SIGKILL, power loss) the journal is all that
remains of its jobs; the next engine reads it and reports every job that was
queued or running then as interrupted.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

# Jobs kept when the journal is compacted at engine start.
KEEP_JOBS = 50


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({**record, "time": time.time()}, default=str) + "\n"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _last_records(self) -> dict[int, dict[str, Any]]:
        last: dict[int, dict[str, Any]] = {}
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            return last
        for line in lines:
            try:
                record = json.loads(line)
                last[int(record["id"])] = {**last.get(int(record["id"]), {}), **record}
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a kill
        return last

    def recover(self) -> tuple[list[dict[str, Any]], list[int]]:
        """Mark jobs a killed engine left queued or running as interrupted.

        Returns every kept job, and the ids interrupted now (reported once, by this start).
        """
        last = self._last_records()
        fresh = []
        for record in last.values():
            if record.get("state") in ("queued", "running"):
                record["state"] = "interrupted"
                record["error"] = "the engine stopped while this job ran (killed or crashed); rerun it"
                fresh.append(int(record["id"]))
        kept = [last[k] for k in sorted(last)[-KEEP_JOBS:]]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(r, default=str) + "\n" for r in kept), encoding="utf-8")
        os.replace(tmp, self.path)
        return kept, fresh
