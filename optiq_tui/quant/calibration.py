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
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from optiq_tui.measures.texts import read_user_text, render_chat
from optiq_tui.progress import OptiqError, ProgressFn, no_progress

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
        return render_chat(doc["messages"], tokenizer)
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


def calibration_for(tokenizer: Any, config: Any, *, model: Any = None, source: Path | None = None,
                    progress: ProgressFn = no_progress,
                    cancel: threading.Event | None = None) -> Calibration:
    """The calibration a QuantConfig asks for: its file or the shipped mix (with the source
    ``model``'s own answers when the config asks for them), and its conversations."""
    docs = conversation_documents(config.conversations) if config.conversations else None
    mix, label = None, "shipped"
    if config.self_answers and config.calibration is None and model is not None and source:
        from optiq_tui.quant.self_answers import source_answers  # it reads the shipped set here

        answers = source_answers(source, model, tokenizer, progress=progress, cancel=cancel)
        mix, label = interleave(shipped_documents(), answers), f"shipped + {len(answers)} own answers"
    return build_calibration(tokenizer, path=config.calibration, conversations=docs, documents=mix,
                             label=label, n_sequences=config.n_calibration, seq_len=config.seq_len)


def interleave(first: list, second: list) -> list:
    """Alternate two lists, the longer one's tail last (every sequence then mixes both)."""
    return [d for pair in zip(first, second) for d in pair] + first[len(second):] + second[len(first):]


def build_calibration(tokenizer: Any, *, path: Path | None = None,
                      conversations: list[dict[str, Any]] | None = None, n_sequences: int = 8,
                      seq_len: int = 512, held_back: int = 2,
                      documents: list[dict[str, Any]] | None = None,
                      label: str = "shipped") -> Calibration:
    """Cut the calibration text into up to ``n_sequences + held_back`` sequences.

    ``conversations`` (chat documents) are interleaved with the shipped mix, or put
    before a user's file, so the first sequences carry the user's own chats. ``documents``
    replaces the shipped mix, named ``label``. The last
    ``held_back`` sequences (when the text has room for them) are kept out of the
    measurement and used to check low-width choices.
    """
    own = conversations or []
    if path is None:
        # The file alternates kinds, so every sequence mixes prose, code, math, chat and tools.
        shipped = shipped_documents() if documents is None else documents
        ids = [t for doc in interleave(own, shipped) for t in _render(doc, tokenizer)]
        source = label
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
