"""`python -m services.cli`: the `regie` command without its entry point installed."""

import sys

from services.cli import main

sys.exit(main())
