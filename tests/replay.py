"""Replay a recorded model output through a loaded model's real stream parser (oterm-style).

Used by the chat tests and the screenshots: the text is tokenized with the
model's tokenizer and fed token by token through mlx-lm's streaming
detokenizer and the chat format's parser, exactly as a generation would be.
:func:`replay_generate` puts the replay in place of ``ChatSession.generate``,
so it reaches the screen the way an answer does: through the engine's chat job.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterator


def replay_events(loaded, text: str, answer_gate: threading.Event | None = None,
                  cancel: threading.Event | None = None) -> Iterator[Any]:
    """``text``'s reasoning/answer deltas, then ``Finished``.

    With ``answer_gate``, answer text waits for the gate so a caller can look at
    the screen while the reasoning is still streaming.
    """
    from optiq_tui.engine.events import AnswerDelta, Finished, GenStats

    ids = loaded.tokenizer.encode(text)
    parser = loaded.format.new_parser([])
    # mlx-lm's streaming detokenizer, as in generation: multi-byte characters span tokens.
    detokenizer = loaded.tokenizer.detokenizer
    detokenizer.reset()
    for token in [*ids, None]:
        if token is None:
            detokenizer.finalize()
        else:
            detokenizer.add_token(token)
        for delta in parser.feed(-1 if token is None else token, detokenizer.last_segment):
            if answer_gate is not None and isinstance(delta, AnswerDelta):
                while not answer_gate.wait(0.05):
                    if cancel is not None and cancel.is_set():
                        return
            yield delta
    yield from parser.finish()
    yield Finished("stop", GenStats(gen_tokens=len(ids)))


def replay_generate(text: str | Callable[[Any], Iterator[Any]], answer_gate: threading.Event | None = None,
                    edit: Callable[[Any], Any] = lambda event: event):
    """A stand-in for ``ChatSession.generate`` that answers with a replay of ``text``.

    ``text`` may instead be a function of the session giving the events; ``edit``
    changes each event on its way (e.g. a prompt size for the final stats).
    Use with ``monkeypatch.setattr(ChatSession, "generate", replay_generate(...))``.
    """
    from optiq_tui.engine.events import AnswerDelta, ReasoningDelta
    from optiq_tui.engine.session import Turn

    def generate(self, user_text, sampler=None, effort=None, cancel=None, **_kwargs):
        turn = Turn(user_text)
        self.turns.append(turn)  # as a generation does, so the history stays the file's
        events = text(self) if callable(text) else replay_events(self.loaded, text, answer_gate, cancel)
        for event in events:
            if isinstance(event, ReasoningDelta):
                turn.reasoning += event.text
            elif isinstance(event, AnswerDelta):
                turn.answer += event.text
            yield edit(event)

    return generate
