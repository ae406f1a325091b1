"""The scrolling list of chat messages, and what the chat screen asks of it."""

from __future__ import annotations

from typing import Any

from textual.containers import VerticalScroll

from optiq_tui.ui.widgets.chat_message import ChatMessage


class Transcript(VerticalScroll):
    """Holds :class:`ChatMessage` widgets in order."""

    @property
    def messages(self) -> list[ChatMessage]:
        return list(self.query(ChatMessage))

    def last(self, role: str, *, with_text: bool = False) -> ChatMessage | None:
        found = [m for m in self.messages if m.role == role and (m.answer_text or not with_text)]
        return found[-1] if found else None

    def mark_from(self, first: ChatMessage, cls: str, on: bool) -> None:
        """Set or clear ``cls`` on ``first`` and every message after it (the exchange being edited)."""
        messages = self.messages
        for m in messages[messages.index(first) :]:
            m.set_class(on, cls)

    def history(self) -> list[tuple[str, str]]:
        """(role, text) of every message with text, to replay into a new ChatSession."""
        return [(m.role, m.answer_text) for m in self.messages if m.answer_text]

    async def drop_last_exchange(self) -> tuple[str, bool] | None:
        """Remove the last user message and what followed it.

        Returns its text and whether the session kept that turn (it keeps a turn
        only when the answer has text: see ``ChatSession.generate``), or None.
        """
        messages = self.messages
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if not users:
            return None
        last = users[-1]
        kept = any(m.role == "assistant" and m.answer_text.strip() for m in messages[last + 1 :])
        for m in messages[last:]:
            await m.remove()
        return messages[last].answer_text, kept

    async def show_conversation(self, conversation: Any) -> None:
        """Replace the messages with a saved ``Conversation``'s."""
        await self.remove_children()
        await self.mount_all(
            [
                ChatMessage(
                    m.role,
                    m.content,
                    label=None if m.role == "user" else (m.model or conversation.model),
                    reasoning=m.reasoning,
                )
                for m in conversation.messages
                if m.role in ("user", "assistant")  # the system prompt is the sampler's, not a message
            ]
        )
        self.scroll_end(animate=False)
