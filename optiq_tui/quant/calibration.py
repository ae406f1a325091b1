"""Calibration token sequences: the shipped mixed text, or a user's file.

The shipped set (``optiq_tui/data/calibration.json``, written for this
project) mixes prose, code, math, chat turns and tool-call JSON; chat turns
are rendered with the model's own chat template, so the measurement sees the
special tokens the model will see when it is used. Held-out evaluation text
(``optiq_tui/data/heldout.txt``) is separate and never used here.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from optiq_tui.progress import OptiqError

CALIBRATION_NAME = "calibration.json"
MIN_TOKENS = 64


@dataclass(frozen=True)
class Calibration:
    """Token sequences to measure on, held-back ones to check choices on, and a hash of both."""

    sequences: list[list[int]]
    held_back: list[list[int]]
    source: str
    digest: str

    @property
    def n_tokens(self) -> int:
        return sum(len(s) for s in self.sequences)


def shipped_documents() -> list[dict[str, Any]]:
    raw = resources.files("optiq_tui.data").joinpath(CALIBRATION_NAME).read_text(encoding="utf-8")
    return json.loads(raw)["documents"]


def _render(doc: dict[str, Any], tokenizer: Any) -> list[int]:
    if "messages" in doc:
        template = getattr(tokenizer, "chat_template", None)
        if template:
            try:
                ids = tokenizer.apply_chat_template(doc["messages"], tokenize=True)
                return list(ids)
            except Exception:  # noqa: BLE001 - a template that rejects tool turns: plain text below
                pass
        text = "\n".join(f"{m['role']}: {m['content']}" for m in doc["messages"]) + "\n\n"
        return tokenizer.encode(text, add_special_tokens=False)
    return tokenizer.encode(doc["text"] + "\n\n", add_special_tokens=False)


def read_calibration_text(path: Path) -> str:
    """A user's calibration file as text; OptiqError saying what is wrong with it."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OptiqError(f"calibration file {path} does not exist") from None
    except IsADirectoryError:
        raise OptiqError(f"calibration file {path} is a folder; give a text file") from None
    except UnicodeDecodeError:
        raise OptiqError(f"calibration file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise OptiqError(f"cannot read calibration file {path}: {exc.strerror or exc}") from None
    if not text.strip():
        raise OptiqError(f"calibration file {path} is empty; give a text file of a few pages")
    return text


def _user_stream(path: Path, tokenizer: Any) -> list[int]:
    text = read_calibration_text(path)
    ids: list[int] = []
    for para in text.split("\n\n"):
        if para.strip():
            ids.extend(tokenizer.encode(para + "\n\n", add_special_tokens=False))
    return ids


def build_calibration(tokenizer: Any, *, path: Path | None = None, n_sequences: int = 8,
                      seq_len: int = 512, held_back: int = 2) -> Calibration:
    """Cut the calibration text into up to ``n_sequences + held_back`` sequences.

    The last ``held_back`` sequences (when the text has room for them) are kept
    out of the measurement and used to check low-width choices.
    """
    if path is None:
        # The file alternates kinds, so every sequence mixes prose, code, math, chat and tools.
        ids: list[int] = []
        for doc in shipped_documents():
            ids.extend(_render(doc, tokenizer))
        source = "shipped"
    else:
        ids = _user_stream(Path(path), tokenizer)
        source = str(path)
    bos = getattr(tokenizer, "bos_token_id", None)
    body = seq_len - 1 if bos is not None else seq_len
    seqs = []
    for start in range(0, len(ids), body):
        chunk = ids[start:start + body]
        if len(chunk) < min(MIN_TOKENS, body):
            break
        seqs.append(([bos] if bos is not None else []) + chunk)
        if len(seqs) == n_sequences + held_back:
            break
    if not seqs:
        raise OptiqError(
            f"the calibration text gives only {len(ids)} tokens; it needs at least {MIN_TOKENS} "
            f"(a few pages of text is best)"
        )
    keep_back = held_back if len(seqs) > held_back + 1 else 0
    main, back = seqs[: len(seqs) - keep_back], seqs[len(seqs) - keep_back:]
    digest = hashlib.sha256(json.dumps([main, back]).encode()).hexdigest()[:16]
    return Calibration(main, back, source, digest)
