"""Imported once by the forkserver, before any worker forks from it.

Workers (and their replacements after a crash) then start with the heavy modules imported and
the feature tables built, instead of paying for both on their critical path.
"""

from prep import features, filters, stage, worker  # noqa: F401 - imported for their side effect: being loaded

features.prepare()
filters.prepare()
