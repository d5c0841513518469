"""The `prep` command's entry point, light to import: `prep run` starts its forkserver here, first of all.

The forkserver's imports (pyarrow, tokenizers, numba and the compiled code: ~0.4 s) are on every run's
critical path, and the command line's own (typer, the pipeline file: ~0.07 s) are not: so the forkserver
starts before the command line is even parsed, while which compiled code the pipeline runs is not known yet.
It waits for that choice only once its other imports are done; `prep run` gives it as soon as it has read
the pipeline (`start_forkserver`). Children run this module again (multiprocessing's preparation of a
script's children), which imports nothing heavy.
"""

from __future__ import annotations

import sys


def main() -> None:
    if _local_run(sys.argv[1:]):
        from prep.engines.local.forkserver import start_forkserver

        start_forkserver(early=True)
    from prep.cli import main as cli_main

    cli_main()


def _local_run(args: list[str]) -> bool:
    """Whether the command line asks for `prep run` on the local engine (a guess, before typer parses it: a wrong
    one costs only the time of a forkserver that goes unused, which the command kills as it ends)."""
    if args[:1] != ["run"] or "--help" in args:
        return False
    for k, arg in enumerate(args):
        if arg.startswith("--engine="):
            return arg.removeprefix("--engine=") == "local"
        if arg == "--engine":
            return args[k + 1 : k + 2] == ["local"]
    return True
