"""`python -m metazoo ...` (and `torchrun ... -m metazoo train ...`): the `metazoo` command."""

import sys

from metazoo.cli import main

sys.exit(main())
