"""``python -m metaplast.cli``: the same as the ``metaplast`` command."""

import sys

from metaplast.cli import main

sys.exit(main())
