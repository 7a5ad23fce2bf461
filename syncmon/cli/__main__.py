"""``python -m syncmon.cli``."""

import sys

from syncmon.cli import main

sys.exit(main())
