"""`python -m tinylm ...` (what `torchrun -m tinylm ...` runs): the `tinylm` command."""

import sys

from tinylm.cli import main

sys.exit(main())
