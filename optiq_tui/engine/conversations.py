"""Saved conversations: one append-only JSONL file per conversation.

Every record is flushed and fsynced as it is written, so a crash or Ctrl-C
loses at most the line being written; a torn last line is skipped on reading.
Renames, sampler settings and "pop" (the last exchange was taken back to
regenerate or edit it) are appended as records too, so nothing is ever
rewritten in place.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from optiq_tui.progress import OptiqError

MESSAGE_ROLES = ("system", "user", "assistant")
_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class SavedMessage:
    role: str
    content: str
    reasoning: str = ""
    time: str = ""
    model: str | None = None
    stats: dict | None = None


@dataclass
class Conversation:
    id: str
    title: str
    model: str
    created: str
    updated: str
    messages: list[SavedMessage] = field(default_factory=list)
    # The conversation's own sampler choices (temperature, top_p, max_tokens, system_prompt).
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationSummary:
    id: str
    title: str
    model: str
    created: str
    updated: str
    n_messages: int


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()[:40] or "conversation"


class ConversationStore:
    """Conversations under ``folder`` (default: the app's conversations folder)."""

    def __init__(self, folder: Path | None = None) -> None:
        if folder is None:
            from optiq_tui.settings import paths

            folder = paths().conversations
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _file(self, conversation_id: str) -> Path:
        if not _ID.match(conversation_id):
            raise OptiqError(f"{conversation_id!r} is not a conversation id (see `optiq-chat conversations list`)")
        return self.folder / f"{conversation_id}.jsonl"

    def _existing(self, conversation_id: str) -> Path:
        path = self._file(conversation_id)
        if not path.exists():
            raise OptiqError(f"no conversation {conversation_id} (see `optiq-chat conversations list`)")
        return path

    def _write(self, path: Path, record: dict[str, Any]) -> None:
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        with open(path, "ab+") as f:
            # A crash may have torn the last line: start ours on a fresh line.
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = b"\n" + line
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def create(self, model: str, title: str = "") -> str:
        """Start a conversation; returns its id."""
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        conversation_id = f"{stamp}-{secrets.token_hex(3)}"
        path = self._file(conversation_id)
        self._write(path, {"type": "meta", "id": conversation_id, "title": title, "model": model, "time": _now()})
        # Make the new file's directory entry durable too.
        if hasattr(os, "O_DIRECTORY"):
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return conversation_id

    def append(
        self,
        conversation_id: str,
        role: str,
        content: str,
        *,
        reasoning: str = "",
        model: str | None = None,
        stats: dict | None = None,
    ) -> None:
        """Save a message (role system/user/assistant) or an event (any other role, e.g. "pop")."""
        path = self._existing(conversation_id)
        if role in MESSAGE_ROLES:
            record: dict[str, Any] = {"type": "message", "role": role, "content": content, "time": _now()}
            if reasoning:
                record["reasoning"] = reasoning
            if model:
                record["model"] = model
            if stats:
                record["stats"] = stats
        else:
            record = {"type": "event", "kind": role, "time": _now()}
        self._write(path, record)

    def set_settings(self, conversation_id: str, settings: dict[str, Any]) -> None:
        """Record the conversation's sampler choices; the latest record replaces earlier ones."""
        self._write(self._existing(conversation_id), {"type": "settings", "settings": settings, "time": _now()})

    def rename(self, conversation_id: str, title: str) -> None:
        self._write(self._existing(conversation_id), {"type": "rename", "title": title, "time": _now()})

    def delete(self, conversation_id: str) -> None:
        self._existing(conversation_id).unlink()

    @staticmethod
    def _records(path: Path) -> Iterator[dict[str, Any]]:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line torn by a crash
                if isinstance(record, dict):
                    yield record

    def load(self, conversation_id: str) -> Conversation:
        path = self._existing(conversation_id)
        conv = Conversation(conversation_id, "", "", "", "")
        for r in self._records(path):
            kind = r.get("type")
            if kind == "meta":
                conv.title, conv.model = r.get("title", ""), r.get("model", "")
                conv.created = r.get("time", "")
            elif kind == "rename":
                conv.title = r.get("title", "")
            elif kind == "settings" and isinstance(r.get("settings"), dict):
                conv.settings = dict(r["settings"])
            elif kind == "message":
                conv.messages.append(
                    SavedMessage(
                        role=r.get("role", "user"),
                        content=r.get("content", ""),
                        reasoning=r.get("reasoning", ""),
                        time=r.get("time", ""),
                        model=r.get("model"),
                        stats=r.get("stats"),
                    )
                )
            elif kind == "event" and r.get("kind") == "pop":
                # Take back the last exchange: the last user message and what followed.
                users = [i for i, m in enumerate(conv.messages) if m.role == "user"]
                if users:
                    del conv.messages[users[-1] :]
            conv.updated = r.get("time", conv.updated)
        return conv

    def list(self) -> list[ConversationSummary]:
        """Every conversation, most recently updated first."""
        out = []
        for path in self.folder.glob("*.jsonl"):
            if not _ID.match(path.stem):
                continue
            c = self.load(path.stem)
            out.append(ConversationSummary(c.id, c.title, c.model, c.created, c.updated, len(c.messages)))
        return sorted(out, key=lambda s: (s.updated, s.id), reverse=True)

    def to_markdown(self, conversation_id: str) -> str:
        c = self.load(conversation_id)
        lines = [f"# {c.title or 'Conversation'}", "", f"*Model: {c.model} · started {c.created}*", ""]
        for m in c.messages:
            who = {"user": "You", "assistant": m.model or c.model or "Assistant"}.get(m.role, m.role.title())
            lines += [f"## {who}", ""]
            if m.reasoning:
                quoted = "\n".join(f"> {line}" if line else ">" for line in m.reasoning.strip().splitlines())
                lines += ["> **Reasoning**", ">", quoted, ""]
            lines += [m.content.strip(), ""]
        return "\n".join(lines)

    def default_export_path(self, conversation_id: str) -> Path:
        c = self.load(conversation_id)
        from optiq_tui.settings import paths

        return paths().exports / f"{_slug(c.title)}-{conversation_id}.md"

    def export_markdown(self, conversation_id: str, path: str | os.PathLike[str] | None = None) -> Path:
        """Write the conversation as Markdown (atomically); returns the file written."""
        target = Path(path).expanduser() if path else self.default_export_path(conversation_id)
        text = self.to_markdown(conversation_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
        return target
