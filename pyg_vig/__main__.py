"""``python -m pyg_vig`` runs the ``pyg-vig`` command."""

import sys

from pyg_vig.cli import main

sys.exit(main())
