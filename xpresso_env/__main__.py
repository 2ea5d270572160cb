"""`python -m xpresso_env`: the same command line as `xpresso-env`."""
import sys

from .cli import main

sys.exit(main())
