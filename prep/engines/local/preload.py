"""Imported once by the forkserver, before any worker forks from it.

Workers (and their replacements after a crash) then start with the heavy modules imported instead of paying
for them on their critical path. Compiled code is `preload_features`'s and `preload_rules`'s, each loaded only for
a pipeline that runs it.
"""

import sys

from prep.core import stage  # noqa: F401 - imported for its side effect: being loaded
from prep.engines.local import worker  # noqa: F401


class _NoPandas:
    """pyarrow imports pandas on first use of some conversions (pa.array of Python objects, to_numpy, pa.scalar:
    ~0.3 s and ~40 MB in each process that meets one, e.g. a worker reading a malformed record). No child of this
    process needs pandas, and pyarrow takes its pandas-free paths when pandas cannot be found (a None entry in
    sys.modules would not do: pyarrow's compiled import returns it)."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"no module named {name!r} in prep's worker processes", name=name)


sys.meta_path.insert(0, _NoPandas())
