"""``python -m leveret`` is the ``leveret`` command."""

import sys

from leveret.cli import main

sys.exit(main())
