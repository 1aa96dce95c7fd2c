"""Make ``import fewray`` work when a pipeline runs from a source checkout (e.g. ``ray job submit --working-dir .``)."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
