"""``python -m pytest_userflow`` runs the ``pytest-userflow`` command."""

import sys

from .cli import main

sys.exit(main())
