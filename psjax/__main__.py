"""``python -m psjax ...``: see ``psjax.cli``."""

from psjax.cli import main

raise SystemExit(main())
