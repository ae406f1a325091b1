"""`python tests/engine_gated.py serve ...`: an engine whose quantize stops after writing, at a gate.

The written model is still in staging then (the measurement already cached).
The engine touches ``$OPTIQ_TEST_GATE.reached`` and waits until the test
creates ``$OPTIQ_TEST_GATE``; tests poll for the first file, never sleep.
"""

import os
import sys
import time
from pathlib import Path

from optiq_tui.quant import writer

gate = Path(os.environ["OPTIQ_TEST_GATE"])
real_write_model = writer.write_model


def gated_write_model(*args, **kwargs):
    real_write_model(*args, **kwargs)
    Path(f"{gate}.reached").touch()
    while not gate.exists():
        time.sleep(0.02)


writer.write_model = gated_write_model

if __name__ == "__main__":
    from optiq_tui.cli import main

    sys.exit(main(sys.argv[1:]))
