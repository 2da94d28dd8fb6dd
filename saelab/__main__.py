"""`python -m saelab …` runs the command line."""

import sys

from saelab.cli import main

sys.exit(main())
