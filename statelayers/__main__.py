"""``python -m statelayers ...``: same as the ``statelayers`` console script."""

import sys

from .cli import main

sys.exit(main())
