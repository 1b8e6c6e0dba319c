"""An example crew (``research.yaml``), its tools, and ``crewline demo``.

``research.yaml`` is the crew the README runs; find it with::

    python -c "import crewline.examples as e; print(e.RESEARCH_YAML)"
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["RESEARCH_YAML"]

RESEARCH_YAML = Path(__file__).with_name("research.yaml")
"""The example crew file: a researcher with a ``lookup`` tool, a writer with ``word_count``."""
