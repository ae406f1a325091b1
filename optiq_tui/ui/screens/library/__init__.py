"""The library (home) screen: the models table, its actions and its jobs."""

from optiq_tui.ui.screens.library.screen import LibraryScreen

__all__ = ["LibraryScreen"]
