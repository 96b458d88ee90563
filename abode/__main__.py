"""``python -m abode``: the same as the ``abode`` command."""

import sys

from abode.cluster.cli.__main__ import main

sys.exit(main())
