"""`python -m genlab.cli ...` = `genlab ...`."""
import sys

from . import main

sys.exit(main())
