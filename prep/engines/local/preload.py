"""Imported once by the forkserver, before any worker forks from it.

Workers (and their replacements after a crash) then start with the heavy modules imported and
the feature tables built, instead of paying for both on their critical path.
"""

from prep.core import stage  # noqa: F401 - imported for its side effect: being loaded
from prep.engines.local import worker  # noqa: F401
from prep.text import features, filters

features.prepare()
filters.prepare()
