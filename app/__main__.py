"""`python -m app` is `routstr serve` (or any `routstr` command given as arguments)."""

import sys

from app.infrastructure.cli import main

raise SystemExit(main(sys.argv[1:] or ["serve"]))
