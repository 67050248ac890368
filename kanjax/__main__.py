"""``python -m kanjax``: the same command line as the ``kanjax`` script."""

import sys

from kanjax.cli import main

sys.exit(main())
