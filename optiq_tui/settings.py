"""Where the app keeps its files, and the user's settings.

Everything lives under platformdirs locations; ``OPTIQ_HOME`` moves the whole
tree to one folder so tests and users can isolate it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from platformdirs import PlatformDirs

APP_NAME = "optiq-tui"


@dataclass(frozen=True)
class Paths:
    """The app's folders; created on first use by :func:`paths`."""

    models: Path
    conversations: Path
    cache: Path
    config: Path
    # The running engine's record, its API key, its log and its jobs journal.
    state: Path

    @property
    def settings_file(self) -> Path:
        return self.config / "settings.json"

    @property
    def staging(self) -> Path:
        # Half-made models are built here and renamed into `models` when complete;
        # same filesystem as `models`, so the rename is atomic.
        return self.models.parent / ".staging"

    @property
    def votes(self) -> Path:
        # Blind A/B votes, one file per pair of models.
        return self.models.parent / "votes"

    @property
    def eval_reports(self) -> Path:
        # Saved eval reports (re-creatable, so with the cache; exports are the user's copies).
        return self.cache / "evals"

    @property
    def exports(self) -> Path:
        # The one default folder for exported conversations and eval reports (made on first export).
        return self.models.parent / "exports"


def paths() -> Paths:
    """The app's folders, honouring ``OPTIQ_HOME``; creates them if missing."""
    home = os.environ.get("OPTIQ_HOME")
    if home:
        root = Path(home).expanduser()
        p = Paths(
            models=root / "models",
            conversations=root / "conversations",
            cache=root / "cache",
            config=root / "config",
            state=root / "state",
        )
    else:
        d = PlatformDirs(APP_NAME, appauthor=False)
        data = Path(d.user_data_dir)
        p = Paths(
            models=data / "models",
            conversations=data / "conversations",
            cache=Path(d.user_cache_dir),
            config=Path(d.user_config_dir),
            state=Path(d.user_state_dir),
        )
    for folder in (p.models, p.conversations, p.cache, p.config, p.state, p.staging):
        folder.mkdir(parents=True, exist_ok=True)
    return p


@dataclass
class Settings:
    """User settings, saved as JSON; unknown keys in the file are ignored."""

    theme: str = "textual-dark"
    system_prompt: str = "You are a helpful assistant."
    # None: the model's own recommendation (engine/sampling.py), else the user's choice.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int = 1024
    seed: int | None = None
    effort: str = "medium"
    target_bpw: float = 5.0
    candidate_bits: list[int] = field(default_factory=lambda: [4, 8])
    group_size: int = 64
    scan_hf_cache: bool = True

    @classmethod
    def load(cls) -> "Settings":
        path = paths().settings_file
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return cls()
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def save(self) -> None:
        path = paths().settings_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)
