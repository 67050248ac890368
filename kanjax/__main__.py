import sys

from kanjax.cli import main

sys.exit(main())
