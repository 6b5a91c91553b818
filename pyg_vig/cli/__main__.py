import sys

from pyg_vig.cli import main

sys.exit(main())
