"""``python -m ucd.cli``: the ``ucd`` command, for nodes where only the module path is known."""

import sys

from ucd.cli import main

sys.exit(main())
