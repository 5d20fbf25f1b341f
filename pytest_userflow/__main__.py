"""``python -m pytest_userflow`` runs the ``pytest-userflow`` command.

PYTEST_DONT_REWRITE (see ``plugin``).
"""

import sys

from .cli import main

sys.exit(main())
