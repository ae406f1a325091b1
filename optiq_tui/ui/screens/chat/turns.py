"""The chat screen's turn and conversation actions: copy, regenerate, edit last, clear, saved chats.

A mixin of :class:`ChatScreen`, kept apart so each file stays readable. The
saved conversation is what the engine answers from: taking back a turn writes
a "pop" into it, and the engine's next answer follows the file.
"""

from __future__ import annotations

from typing import Any

from textual.widgets import Input

from optiq_tui.progress import OptiqError
from optiq_tui.ui.widgets.chat_message import ChatMessage

# How much of a copied answer the confirmation quotes.
COPY_QUOTE = 40


class TurnActions:
    """Actions on the conversation's turns and its saved file (mixed into ChatScreen)."""

    # Set by ChatScreen; declared for the type checker.
    _editing: ChatMessage | None

    def action_copy_answer(self) -> None:
        """Copy the last finished answer (never one still streaming), saying which."""
        done = [m for m in self.transcript.messages if m.role == "assistant" and not m.streaming and m.answer_text]
        if not done:
            self.notify("No finished answer to copy yet.")
            return
        text = done[-1].answer_text
        self.app.copy_to_clipboard(text)
        quote = " ".join(text.split())
        quote = quote if len(quote) <= COPY_QUOTE else quote[: COPY_QUOTE - 1] + "…"
        which = "the answer before this one" if self.generating else "the last answer"
        self.notify(f"Copied {which} ({len(text)} characters): “{quote}”")

    async def _drop_last_turn(self) -> str | None:
        """Remove the last exchange from the screen and the saved conversation; return its prompt."""
        if self.ready is None:
            return None
        dropped = await self.transcript.drop_last_exchange()
        if dropped is None:
            return None
        text, _kept = dropped
        self._save_event("pop")
        return text

    async def action_regenerate(self) -> None:
        if self.generating:
            self.notify("Still answering: Esc stops it first.", severity="warning")
            return
        self.cancel_edit()
        text = await self._drop_last_turn()
        if text is None:
            self.notify("Nothing to regenerate.")
            return
        await self.send(text)

    async def action_edit_last(self) -> None:
        """Put the last message in the input, cursor at its end; it replaces the old one only when sent."""
        if self.generating:
            self.notify("Still answering: Esc stops it first.", severity="warning")
            return
        last = self.transcript.last("user")
        if last is None:
            self.notify("No message to edit.")
            return
        self._editing = last
        self.transcript.mark_from(last, "editing", True)
        prompt = self.query_one("#prompt", Input)
        prompt.value = last.answer_text
        prompt.cursor_position = len(prompt.value)
        prompt.focus()
        self._set_notice("Editing your last message: Enter sends it in place of the old one, Esc keeps the old one.")

    def cancel_edit(self) -> bool:
        """Leave edit mode with the conversation as it was; False when not editing."""
        if self._editing is None:
            return False
        self.transcript.mark_from(self._editing, "editing", False)
        self._editing = None
        self.query_one("#prompt", Input).value = ""
        self._set_notice("")
        return True

    async def _replace_edited(self) -> None:
        """The edited message is being sent: now the old exchange goes, from screen and file."""
        if self._editing is None:
            return
        self._editing = None
        self._set_notice("")
        await self._drop_last_turn()

    # ---- sampler ----------------------------------------------------

    @property
    def system_prompt(self) -> str:
        return self.chat_settings.get("system_prompt") or self.settings.system_prompt

    def current_sampler(self) -> tuple[Any, str]:
        """The sampler of this conversation: its own choices, the app's settings, the model's defaults."""
        from optiq_tui.engine.sampling import resolve_sampler

        s, c = self.settings, self.chat_settings
        return resolve_sampler(
            self.info.path,
            temperature=c.get("temperature", s.temperature),
            top_p=c.get("top_p", s.top_p),
            max_tokens=c.get("max_tokens", s.max_tokens),
            seed=s.seed,
        )

    def sampler_text(self) -> str:
        sampler, source = self.current_sampler()
        return f"{sampler.describe()} ({'set by you' if source == 'you' else source})"

    def action_sampler(self) -> None:
        """Edit this conversation's temperature, top-p, max tokens and system prompt."""
        from optiq_tui.engine.sampling import resolve_sampler
        from optiq_tui.ui.screens.chat.sampler import SamplerModal

        # What an empty field falls back to: the app's settings over the model's recommendation.
        s = self.settings
        fallback, source = resolve_sampler(self.info.path, temperature=s.temperature, top_p=s.top_p,
                                           max_tokens=s.max_tokens)
        defaults = f"{fallback.describe()} ({'your settings' if source == 'you' else source})"
        self.app.push_screen(
            SamplerModal(self.chat_settings, fallback, defaults, s.system_prompt), self._sampler_chosen
        )

    def _sampler_chosen(self, chosen: dict[str, Any] | None) -> None:
        if chosen is None:
            return
        self.chat_settings = chosen
        if self.conversation_id is not None:
            self._save_settings()
        # The system prompt goes with every answer the engine is asked for: nothing more to do.
        self.notify(f"Sampler: {self.sampler_text()}")

    def _save_settings(self) -> None:
        try:
            self.store.set_settings(self.conversation_id, self.chat_settings)
        except (OSError, OptiqError) as exc:
            self.notify(f"Could not save the sampler: {exc}", severity="warning")

    async def action_clear(self) -> None:
        """Start a new conversation with the same model."""
        self.cancel_edit()
        if self.generating:
            await self.cancel_job()
            await self._job_ended("cancelled")
        await self.transcript.remove_children()
        # The next answer starts a new conversation in the engine.
        self.conversation_id = None
        self.stats_line.show_text("")

    def action_change_model(self) -> None:
        from optiq_tui.ui.screens.model_picker import ModelPickerModal

        if self.generating:
            self.notify("Still answering: Esc stops it first.", severity="warning")
            return

        def picked(info: Any) -> None:
            if info is not None:
                self.load_model(info)

        self.app.push_screen(ModelPickerModal("Chat with another model", exclude=self.info), picked)

    def action_conversations(self) -> None:
        from optiq_tui.ui.screens.conversations import ConversationsScreen

        if self.generating:
            self.notify("Still answering: Esc stops it first.", severity="warning")
            return

        def chosen(conversation_id: str | None) -> None:
            if conversation_id is not None:
                self.call_later(self.open_conversation, conversation_id)

        self.app.push_screen(ConversationsScreen(), chosen)

    # ---- conversations ------------------------------------------------

    @property
    def store(self) -> Any:
        if self._store is None:
            from optiq_tui.engine.conversations import ConversationStore

            self._store = ConversationStore()
        return self._store

    def _save_event(self, kind: str) -> None:
        if self.conversation_id is not None:
            try:
                self.store.append(self.conversation_id, kind, "")
            except (OSError, OptiqError) as exc:
                self.notify(f"Could not save the conversation: {exc}", severity="warning")

    async def open_conversation(self, conversation_id: str) -> None:
        """Show a saved conversation and continue it with the current model."""
        self.cancel_edit()
        conversation = self.store.load(conversation_id)
        await self.transcript.show_conversation(conversation)
        # The engine answers the next message from this conversation's saved file.
        self.conversation_id = conversation_id
        self.chat_settings = dict(conversation.settings)
