"""Blind votes between two models: a tally per pair, whichever side each was shown on."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from optiq_tui.settings import paths

VOTES = ("left", "right", "tie", "both-bad")


@dataclass
class Tally:
    """Votes for one pair of models, however they were placed on screen."""

    models: tuple[str, str]
    wins: dict[str, int] = field(default_factory=dict)  # model name -> votes won
    tie: int = 0
    both_bad: int = 0

    @property
    def total(self) -> int:
        return sum(self.wins.values()) + self.tie + self.both_bad

    def describe(self) -> str:
        x, y = self.models
        return (
            f"{x} {self.wins.get(x, 0)} · {y} {self.wins.get(y, 0)} · "
            f"tie {self.tie} · both bad {self.both_bad} ({self.total} vote{'' if self.total == 1 else 's'})"
        )


def votes_dir() -> Path:
    folder = paths().votes
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _pair_file(info_x: Any, info_y: Any) -> tuple[Path, tuple[Any, Any]]:
    """The tally file of an unordered pair, and the pair in its stored order."""
    pair = tuple(sorted((info_x, info_y), key=lambda i: str(Path(i.path).resolve())))
    key = "\n".join(str(Path(i.path).resolve()) for i in pair)
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    slug = "--".join(re.sub(r"[^A-Za-z0-9._-]+", "-", i.name)[:30] for i in pair)
    return votes_dir() / f"{slug}-{digest}.json", pair  # type: ignore[return-value]


def load_tally(info_x: Any, info_y: Any) -> Tally:
    path, (x, y) = _pair_file(info_x, info_y)
    tally = Tally((x.name, y.name), {x.name: 0, y.name: 0})
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return tally
    tally.wins.update({k: int(v) for k, v in data.get("wins", {}).items() if k in tally.wins})
    tally.tie, tally.both_bad = int(data.get("tie", 0)), int(data.get("both_bad", 0))
    return tally


def record_vote(left: Any, right: Any, vote: str, prompt: str | None = None) -> Tally:
    """Record ``vote`` (one of VOTES) for the models shown on the left and right; return the pair's tally."""
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, not {vote!r}")
    path, (x, y) = _pair_file(left, right)
    tally = load_tally(left, right)
    if vote == "left":
        tally.wins[left.name] += 1
    elif vote == "right":
        tally.wins[right.name] += 1
    elif vote == "tie":
        tally.tie += 1
    else:
        tally.both_bad += 1
    try:
        history = json.loads(path.read_text()).get("history", [])
    except (OSError, ValueError):
        history = []
    history.append(
        {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "left": left.name,
            "right": right.name,
            "vote": vote,
            **({"prompt": prompt} if prompt is not None else {}),
        }
    )
    data = {
        "models": [x.name, y.name],
        "paths": [str(x.path), str(y.path)],
        "wins": tally.wins,
        "tie": tally.tie,
        "both_bad": tally.both_bad,
        "history": history,
    }
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)
    return tally
