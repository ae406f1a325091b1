"""`python tests/engine_gated.py serve ...`: an engine whose jobs stop at a gate.

A quantize stops after writing (the model still in staging, the measurement
already cached) and touches ``$OPTIQ_TEST_GATE.reached``; a chat answer stops
after its first event and touches ``$OPTIQ_TEST_GATE.chat``; an eval stops
after its first finished row and touches ``$OPTIQ_TEST_GATE.eval``. All wait
until the test creates ``$OPTIQ_TEST_GATE``; tests poll for the files, never sleep.
"""

import os
import sys
import time
from pathlib import Path

from optiq_tui.engine import session
from optiq_tui.eval import quality
from optiq_tui.eval.results import ModelEvaluated
from optiq_tui.quant import writer

gate = Path(os.environ["OPTIQ_TEST_GATE"])
real_write_model = writer.write_model


def gated_write_model(*args, **kwargs):
    real_write_model(*args, **kwargs)
    Path(f"{gate}.reached").touch()
    while not gate.exists():
        time.sleep(0.02)


writer.write_model = gated_write_model
real_generate = session.ChatSession.generate


def gated_generate(self, *args, **kwargs):
    for n, event in enumerate(real_generate(self, *args, **kwargs)):
        yield event
        if n == 0:
            Path(f"{gate}.chat").touch()
            while not gate.exists():
                time.sleep(0.02)


session.ChatSession.generate = gated_generate
real_evaluate = quality.evaluate


def gated_evaluate(*args, progress, **kwargs):
    rows = []

    def gated_progress(event):
        progress(event)
        if isinstance(event, ModelEvaluated) and not rows:
            rows.append(event)
            Path(f"{gate}.eval").touch()
            while not gate.exists():
                time.sleep(0.02)

    return real_evaluate(*args, progress=gated_progress, **kwargs)


quality.evaluate = gated_evaluate

if __name__ == "__main__":
    from optiq_tui.cli import main

    sys.exit(main(sys.argv[1:]))
