"""`python -m botkeeper COMMAND ...`: see botkeeper/ops/cli.py for the commands."""

from .ops.cli import main

raise SystemExit(main())
