"""Imported by the forkserver after `preload` when the pipeline computes features with compiled code: the
feature tables built and the compiled features loaded once (numba: ~0.3 s and ~100 MB), not in every worker.
A load from numba's cache imports none of the optional libraries numba supports (scipy's BLAS, cffi):
see `prep.text._numba`."""

from prep.text import features

features.prepare()
# The filter rules' table is not built here: rules are off by default, and a stage with rule sets builds it
# (~0.07 s) while it loads their compiled code anyway.
