"""`python -m xpresso_env.cli`: the same command line as `xpresso-env` (the test helpers run it so)."""
import sys

from . import main

sys.exit(main())
