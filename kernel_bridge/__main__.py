"""``python -m kernel_bridge ...``: the ``syftlab`` command (:mod:`kernel_bridge.cli`)."""

import sys

from kernel_bridge.cli import main

sys.exit(main())
