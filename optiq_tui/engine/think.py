"""Split a streamed ``<think>…</think>`` block (Qwen3, DeepSeek-R1 style) from the answer.

Hand-written because mlx-lm only detects the tags as whole tokens and leaves
the split to its callers, while tags can arrive in pieces (``<th`` + ``ink>``)
with tokenizers that lack them as special tokens, and some templates open the
block in the prompt so the stream holds only the closing tag.
"""

from __future__ import annotations

from optiq_tui.engine.events import AnswerDelta, ReasoningDelta, TextDelta

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


def partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could be the start of ``tag``."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class ThinkSplitter:
    """Feed text pieces; get reasoning and answer deltas.

    ``in_reasoning`` starts True when the prompt already opened the block. A
    stray closing tag in the answer is dropped; text that could be the start
    of a tag is held back until the next piece decides (or :meth:`finish`).
    Whitespace right after a tag is trimmed, as the templates put newlines there.
    """

    def __init__(self, in_reasoning: bool = False) -> None:
        self.in_reasoning = in_reasoning
        self._pending = ""
        self._trim_start = True

    def feed(self, token: int = -1, text: str = "") -> list[TextDelta]:
        """Process the detokenized ``text`` of one token (the id is not needed here)."""
        if not text:
            return []
        self._pending += text
        out: list[TextDelta] = []
        while True:
            tag = CLOSE_TAG if self.in_reasoning else OPEN_TAG
            at = self._pending.find(tag)
            stray = -1 if self.in_reasoning else self._pending.find(CLOSE_TAG)
            if stray != -1 and (at == -1 or stray < at):
                # A closing tag with no opening one: the block was opened by the
                # prompt, or the model slipped; either way not answer text.
                self._emit(out, self._pending[:stray])
                self._pending = self._pending[stray + len(CLOSE_TAG) :]
                self._trim_start = True
                continue
            if at == -1:
                break
            self._emit(out, self._pending[:at])
            self._pending = self._pending[at + len(tag) :]
            self.in_reasoning = not self.in_reasoning
            self._trim_start = True
        hold = max(
            partial_tag_suffix(self._pending, CLOSE_TAG),
            0 if self.in_reasoning else partial_tag_suffix(self._pending, OPEN_TAG),
        )
        self._emit(out, self._pending[: len(self._pending) - hold])
        self._pending = self._pending[len(self._pending) - hold :]
        return out

    def finish(self) -> list[TextDelta]:
        """End of stream (possibly truncated mid-tag): release what was held back."""
        out: list[TextDelta] = []
        self._emit(out, self._pending)
        self._pending = ""
        return out

    def _emit(self, out: list[TextDelta], text: str) -> None:
        if self._trim_start:
            text = text.lstrip()
            if not text:
                return
            self._trim_start = False
        if not text:
            return
        delta = ReasoningDelta(text) if self.in_reasoning else AnswerDelta(text)
        if out and type(out[-1]) is type(delta):
            out[-1] = type(delta)(out[-1].text + text)
        else:
            out.append(delta)
