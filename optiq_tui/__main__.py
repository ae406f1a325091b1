import sys

from optiq_tui.cli import main

sys.exit(main())
