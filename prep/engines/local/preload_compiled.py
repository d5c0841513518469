"""Imported by the forkserver last, after `preload`: the compiled code the pipeline runs (`preload_features`,
`preload_rules`), loaded once for every worker. Which it is may arrive only now (`forkserver.await_choice`: a
forkserver started before the command line was parsed)."""

import importlib

from prep.engines.local.forkserver import PRELOAD_COMPILED, await_choice

for part in await_choice():
    importlib.import_module(PRELOAD_COMPILED[part])
