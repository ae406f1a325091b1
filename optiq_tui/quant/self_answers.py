"""Self-generated calibration: the source model's own answers to the shipped chat prompts.

A quant is used to continue the model's own replies, not text someone else
wrote; calibrating on the source's answers puts the activations of the model's
own style, and its chat format, into the measurement and the compensation.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Any

from optiq_tui.measures.flips import greedy_answers
from optiq_tui.progress import Progress, ProgressFn, check_cancel, no_progress
from optiq_tui.quant.cache import cache_path, save_record, source_fingerprint
from optiq_tui.quant.calibration import shipped_documents

# A paragraph of reply: enough of the model's own style, and 18 prompts stay a few minutes on a CPU.
ANSWER_TOKENS = 160


def prompts_of(documents: list[dict[str, Any]]) -> list[list[dict[str, str]]]:
    """Each chat document cut after its first user turn (its system message kept)."""
    prompts = []
    for doc in documents:
        messages = doc.get("messages") or []
        first_user = next((i for i, m in enumerate(messages) if m["role"] == "user"), None)
        if first_user is not None:
            prompts.append([dict(m) for m in messages[: first_user + 1]])
    return prompts


def self_answer_documents(model: Any, tokenizer: Any, documents: list[dict[str, Any]], *,
                          max_tokens: int = ANSWER_TOKENS, progress: ProgressFn = no_progress,
                          cancel: threading.Event | None = None) -> list[dict[str, Any]]:
    """Chat documents of each prompt in ``documents`` with the model's greedy answer."""
    out = []
    prompts = prompts_of(documents)
    for i, prompt in enumerate(prompts):
        check_cancel(cancel)
        progress(Progress("calibrate", i, len(prompts), "the source answers the chat prompts",
                          "answers"))
        (answer,) = greedy_answers(model, tokenizer, [prompt], max_tokens)
        if answer.strip():
            out.append({"kind": "self", "messages": prompt + [{"role": "assistant", "content": answer}]})
    return out


def source_answers(source: Path, model: Any, tokenizer: Any, *, progress: ProgressFn = no_progress,
                   cancel: threading.Event | None = None) -> list[dict[str, Any]]:
    """The source's answers to the shipped chat prompts: cached per source, so every budget
    and preset of one source calibrates on the same text (and reuses its sensitivity)."""
    prompts = prompts_of(shipped_documents())
    raw = json.dumps([source_fingerprint(source), prompts, ANSWER_TOKENS])
    path = cache_path(hashlib.sha256(raw.encode()).hexdigest()[:24], "self-answers")
    try:
        return json.loads(path.read_text())["documents"]
    except (OSError, ValueError, KeyError):  # none yet, or a damaged file: answer again
        pass
    docs = self_answer_documents(model, tokenizer, shipped_documents(), progress=progress, cancel=cancel)
    save_record(path, {"documents": docs})
    return docs
