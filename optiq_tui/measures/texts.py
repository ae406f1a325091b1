"""Held-out evaluation text and its tokenization into fixed-length sequences.

The app ships ``optiq_tui/data/heldout.txt``: original prose, code, math and
dialogue written for this project, on topics chosen to be far from what a
calibration set holds, so a quant tuned on calibration text is not graded on it.
A user file can replace it. ``heldout_chat.json`` holds chat conversations
for the same purpose, rendered in each model's own chat format.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from optiq_tui.progress import OptiqError

HELDOUT_NAME = "heldout.txt"
HELDOUT_CHAT_NAME = "heldout_chat.json"

# Sequences shorter than this carry too little context to say much; a short tail is dropped.
MIN_SEQ_TOKENS = 16


def heldout_text(path: str | Path | None = None) -> str:
    """The shipped held-out text, or the text of the user's file ``path``."""
    if path is None:
        return resources.files("optiq_tui.data").joinpath(HELDOUT_NAME).read_text(encoding="utf-8")
    return read_user_text(Path(path), "evaluation text", "give a file with some text in it")


def read_user_text(path: Path, what: str, empty_hint: str) -> str:
    """A text file the user named (``what``: "calibration file"...); OptiqError saying what is wrong."""
    p = path.expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OptiqError(f"{what} {p} does not exist") from None
    except IsADirectoryError:
        raise OptiqError(f"{what} {p} is a folder; give a text file") from None
    except UnicodeDecodeError:
        raise OptiqError(f"{what} {p} is not UTF-8 text; convert it or give another file") from None
    except OSError as exc:
        raise OptiqError(f"cannot read {what} {p}: {exc.strerror or exc}") from None
    if not text.strip():
        raise OptiqError(f"{what} {p} is empty; {empty_hint}")
    return text


def heldout_tokens(
    tokenizer: Any,
    max_tokens: int = 8192,
    seq_len: int = 512,
    text: str | Path | None = None,
) -> list[list[int]]:
    """Token sequences of at most ``seq_len`` tokens, at most ``max_tokens`` in total.

    ``tokenizer`` is anything with ``encode(str) -> list[int]`` (an mlx-lm
    TokenizerWrapper or a Hugging Face tokenizer). ``text`` is a path to a
    user file, or None for the shipped text. When the tokenizer has a BOS
    token, every sequence starts with it, as the model saw text in training.
    """
    if seq_len < MIN_SEQ_TOKENS:
        raise OptiqError(f"sequence length {seq_len} is too short; use at least {MIN_SEQ_TOKENS}")
    return _sequences(tokenizer, _encode_paragraphs(tokenizer, heldout_text(text)), max_tokens,
                      seq_len, "evaluation text")


def heldout_chat_tokens(tokenizer: Any, max_tokens: int = 8192, seq_len: int = 512) -> list[list[int]]:
    """The shipped held-out chat conversations, each in the model's chat format, as sequences
    cut like :func:`heldout_tokens` (conversations run on across sequence boundaries)."""
    raw = resources.files("optiq_tui.data").joinpath(HELDOUT_CHAT_NAME).read_text(encoding="utf-8")
    ids = [t for c in json.loads(raw)["conversations"] for t in render_chat(c["messages"], tokenizer)]
    return _sequences(tokenizer, ids, max_tokens, seq_len, "held-out chat text")


def render_chat(messages: list[dict[str, str]], tokenizer: Any) -> list[int]:
    """A conversation's tokens in the model's own chat template (its special tokens
    included), or as "role: text" lines for a model without one or whose template
    rejects a turn (some refuse tool turns)."""
    if getattr(tokenizer, "chat_template", None):
        try:
            return list(tokenizer.apply_chat_template(messages, tokenize=True))
        except Exception:  # noqa: BLE001 - any template error: the plain rendering below
            pass
    text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + "\n\n"
    return tokenizer.encode(text, add_special_tokens=False)


def _sequences(tokenizer: Any, ids: list[int], max_tokens: int, seq_len: int,
               what: str) -> list[list[int]]:
    bos = getattr(tokenizer, "bos_token_id", None)
    body_len = seq_len - 1 if bos is not None else seq_len
    sequences: list[list[int]] = []
    total = 0
    for start in range(0, len(ids), body_len):
        chunk = ids[start : start + body_len]
        seq = [bos, *chunk] if bos is not None else chunk
        seq = seq[: max(0, max_tokens - total)]
        if len(seq) < MIN_SEQ_TOKENS:
            break
        sequences.append(seq)
        total += len(seq)
    if not sequences:
        raise OptiqError(f"the {what} gives only {len(ids)} tokens; "
                         f"give at least {MIN_SEQ_TOKENS} tokens of text")
    return sequences


def _encode_paragraphs(tokenizer: Any, text: str) -> list[int]:
    """Encode paragraph by paragraph, so tokenizers do not warn that the text exceeds
    the model's length; differs from one call only in how blank lines split."""
    ids: list[int] = []
    paragraphs = text.split("\n\n")
    for i, para in enumerate(paragraphs):
        piece = para + ("\n\n" if i < len(paragraphs) - 1 else "")
        if piece:
            ids.extend(tokenizer.encode(piece, add_special_tokens=False))
    return ids
