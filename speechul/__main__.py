"""``python -m speechul``: see ``speechul.cli``."""

import sys

from .cli import main

sys.exit(main())
