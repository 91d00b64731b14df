"""`python -m genlab ...` = `genlab ...`; torchrun starts its processes this way:
`torchrun --nproc-per-node N -m genlab train MODEL ...` (distributed.py)."""
import sys

from .cli import main

sys.exit(main())
