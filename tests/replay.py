"""Replay a recorded model output through a loaded model's real stream parser (oterm-style).

Used by the chat tests and the screenshot script: the text is tokenized with
the model's tokenizer and fed token by token through mlx-lm's streaming
detokenizer and the chat format's parser, exactly as a generation would be.
"""

from __future__ import annotations

import threading


def replay_job(loaded, text: str, answer_gate: threading.Event | None = None):
    """An engine job emitting ``text``'s reasoning/answer deltas, then ``Finished``.

    With ``answer_gate``, answer text waits for the gate so a caller can look at
    the screen while the reasoning is still streaming.
    """
    from optiq_tui.engine.events import AnswerDelta, Finished, GenStats

    ids = loaded.tokenizer.encode(text)

    def job(emit, cancel):
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
                        if cancel.is_set():
                            return
                emit(delta)
        for delta in parser.finish():
            emit(delta)
        emit(Finished("stop", GenStats(gen_tokens=len(ids))))

    return job
