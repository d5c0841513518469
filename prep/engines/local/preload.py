"""Imported once by the forkserver, before any worker forks from it.

Workers (and their replacements after a crash) then start with the heavy modules imported and
the feature tables built, instead of paying for both on their critical path.
"""

import pandas  # noqa: F401 - pyarrow's to_numpy imports it on first use (~0.5 s): once here, not in every child

from prep.core import stage  # noqa: F401 - imported for its side effect: being loaded
from prep.engines.local import worker  # noqa: F401
from prep.text import features, filters

features.prepare()
filters.prepare()
