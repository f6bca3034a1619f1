"""`python -m policies.tuning ...` runs the `tune` subcommands."""

import sys

from policies.tuning.cli import main

sys.exit(main())
