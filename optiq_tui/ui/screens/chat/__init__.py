"""The chat screen: one model, streamed answers, saved conversations."""

from optiq_tui.ui.screens.chat.screen import ChatScreen

__all__ = ["ChatScreen"]
