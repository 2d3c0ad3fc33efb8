"""`python -m botkeeper COMMAND ...`: see botkeeper/cli.py for the commands."""

from .cli import main

raise SystemExit(main())
