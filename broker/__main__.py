"""``python -m broker`` is the ``leveret`` command."""

import sys

from broker.cli import main

sys.exit(main())
