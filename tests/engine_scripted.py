"""`python tests/engine_scripted.py serve ...`: an engine whose generations a test can steer and hold.

Files in ``$OPTIQ_TEST_DIR`` (the test writes them, polls for the ones the engine writes):

* ``script.json``: token ids the next generations are made to emit, through a
  logits processor (the real model still runs every step), as the harmony
  tests in test_engine_harmony.py do with a random tiny gpt_oss;
* ``prompts.txt``: every harmony prompt the engine renders, decoded, is appended;
* ``armed``: a generation stops after its first event, touches ``held`` and
  waits until the test creates ``open``.
"""

import json
import os
import sys
import time
from pathlib import Path

from optiq_tui.engine import formats, session

folder = Path(os.environ["OPTIQ_TEST_DIR"])
real_generate = session.ChatSession.generate
real_render = formats.HarmonyFormat.render


def forcing(sequence):
    import mlx.core as mx

    step = iter(range(len(sequence)))

    def processor(_tokens, logits):
        i = next(step, len(sequence) - 1)
        mask = mx.full(logits.shape, -1e9, dtype=logits.dtype)
        mask[..., sequence[i]] = 0
        return logits + mask

    return processor


def scripted_generate(self, *args, **kwargs):
    script = folder / "script.json"
    if script.exists():
        kwargs["logits_processors"] = [forcing(json.loads(script.read_text()))]
    for n, event in enumerate(real_generate(self, *args, **kwargs)):
        yield event
        if n == 0 and (folder / "armed").exists():
            (folder / "held").touch()
            while not (folder / "open").exists():
                time.sleep(0.02)


def recording_render(self, messages, effort=None, tools=None):
    ids = real_render(self, messages, effort, tools)
    with open(folder / "prompts.txt", "a") as f:
        f.write(self.encoding.decode(ids) + "\n<<END>>\n")
    return ids


session.ChatSession.generate = scripted_generate
formats.HarmonyFormat.render = recording_render

if __name__ == "__main__":
    from optiq_tui.cli import main

    sys.exit(main(sys.argv[1:]))
