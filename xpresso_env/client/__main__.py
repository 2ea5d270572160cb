"""`python -m xpresso_env.client`: the `xpresso` command."""
import sys

from .main import main

sys.exit(main())
