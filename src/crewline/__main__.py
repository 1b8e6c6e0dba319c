"""``python -m crewline``: the same as the ``crewline`` command."""

from crewline._surface.cli import main

raise SystemExit(main())
