"""`python tests/engine_scripted.py serve ...`: an engine whose generations a test can steer and hold.

Files in ``$OPTIQ_TEST_DIR`` (the test writes them, polls for the ones the engine writes):

* ``script.json``: token ids the next generations are made to emit, through a
  logits processor (the real model still runs every step), as the harmony
  tests in test_engine_harmony.py do with a random tiny gpt_oss;
* ``prompts.txt``: every prompt the engine renders (harmony or template), decoded, is appended;
* ``armed``: a generation stops after its first event, touches ``held`` and
  waits until the test creates ``open``.
"""

import json
import os
import sys
import time
from pathlib import Path

from optiq_tui.engine import formats, session
from forcing import forcing  # run as a script: tests/ is on the path

folder = Path(os.environ["OPTIQ_TEST_DIR"])
real_generate = session.ChatSession.generate
real_renders = {cls: cls.render for cls in (formats.HarmonyFormat, formats.TemplateFormat)}


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


def recording(cls):
    def render(self, messages, effort=None, tools=None):
        ids = real_renders[cls](self, messages, effort, tools)
        decode = self.encoding.decode if cls is formats.HarmonyFormat else self.tokenizer.decode
        with open(folder / "prompts.txt", "a") as f:
            f.write(decode(ids) + "\n<<END>>\n")
        return ids

    return render


session.ChatSession.generate = scripted_generate
for cls in real_renders:
    cls.render = recording(cls)

if __name__ == "__main__":
    from optiq_tui.cli import main

    sys.exit(main(sys.argv[1:]))
