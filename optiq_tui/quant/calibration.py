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

from optiq_tui.measures.texts import read_user_text
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
    return read_user_text(path, "calibration file", "give a text file of a few pages")


def _user_stream(path: Path, tokenizer: Any) -> list[int]:
    text = read_calibration_text(path)
    ids: list[int] = []
    for para in text.split("\n\n"):
        if para.strip():
            ids.extend(tokenizer.encode(para + "\n\n", add_special_tokens=False))
    return ids


def conversation_documents(ids: tuple[str, ...] | list[str]) -> list[dict[str, Any]]:
    """The user's saved conversations as chat documents (reasoning left out, as a chat
    template leaves earlier turns' reasoning out); read only, never written."""
    from optiq_tui.engine.conversations import ConversationStore

    store = ConversationStore()
    wanted = [s.id for s in store.list()] if tuple(ids) == ("all",) else list(ids)
    docs = []
    for conversation_id in wanted:
        messages = [{"role": m.role, "content": m.content}
                    for m in store.load(conversation_id).messages
                    if m.role in ("user", "assistant") and m.content.strip()]
        if messages:
            docs.append({"messages": messages})
    if not docs:
        raise OptiqError("no saved conversation with messages to calibrate on "
                         "(chat first, or leave out --calibration-from-conversations)")
    return docs


def calibration_for(tokenizer: Any, config: Any) -> Calibration:
    """The calibration a QuantConfig asks for (its file or the shipped mix, and its conversations)."""
    docs = conversation_documents(config.conversations) if config.conversations else None
    return build_calibration(tokenizer, path=config.calibration, conversations=docs,
                             n_sequences=config.n_calibration, seq_len=config.seq_len)


def build_calibration(tokenizer: Any, *, path: Path | None = None,
                      conversations: list[dict[str, Any]] | None = None, n_sequences: int = 8,
                      seq_len: int = 512, held_back: int = 2) -> Calibration:
    """Cut the calibration text into up to ``n_sequences + held_back`` sequences.

    ``conversations`` (chat documents) are interleaved with the shipped mix, or put
    before a user's file, so the first sequences carry the user's own chats. The last
    ``held_back`` sequences (when the text has room for them) are kept out of the
    measurement and used to check low-width choices.
    """
    own = conversations or []
    if path is None:
        # The file alternates kinds, so every sequence mixes prose, code, math, chat and tools.
        shipped = shipped_documents()
        docs = [d for pair in zip(own, shipped) for d in pair] + own[len(shipped):] + shipped[len(own):]
        ids: list[int] = []
        for doc in docs:
            ids.extend(_render(doc, tokenizer))
        source = "shipped"
    else:
        ids = [t for doc in own for t in _render(doc, tokenizer)] + _user_stream(Path(path), tokenizer)
        source = str(path)
    if own:
        source += f" + {len(own)} saved conversation{'s' if len(own) != 1 else ''}"
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
