"""``python -m device``: see :mod:`device.cli`."""

import sys

from .cli import main

sys.exit(main())
