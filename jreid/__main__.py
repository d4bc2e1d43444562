"""`python -m jreid ...` is the `jreid` command (jreid.cli)."""

import sys

from jreid import cli

sys.exit(cli.main())
