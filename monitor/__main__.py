"""``python -m monitor`` is the ``fairwatch`` command."""

import sys

from monitor.cli import main

sys.exit(main())
