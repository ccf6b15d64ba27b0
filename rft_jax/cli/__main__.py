"""`python -m rft_jax.cli COMMAND ...`, the same as `rft-jax COMMAND ...`."""

import sys

from rft_jax.cli import main

sys.exit(main())
