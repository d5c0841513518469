"""The forkserver that every worker and writer is forked from, with the heavy modules already imported.

Its own module, light to import, so that `prep run` can start it first of all: the forkserver's imports
(pyarrow, tokenizers, the compiled features) then run while the command line's own are still loading.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import warnings
from collections.abc import Sequence
from multiprocessing import forkserver

from prep.core.threads import single_thread_env

TRACKER_WARNING = "resource_tracker: process died unexpectedly"  # a new one is started; it tracks nothing of ours


_PRELOAD = ["prep.cli", "prep.engines.local.preload"]
_PRELOAD_COMPILED = {"features": "prep.engines.local.preload_features", "rules": "prep.engines.local.preload_rules"}
_compiled = [("features",)]  # the compiled code the forkserver loads too: the first start decides, restarts follow


def start_forkserver(compiled: Sequence[str] | None = None) -> None:
    """Start the forkserver (unless it runs), with its preload, while SIGINT is ignored: the disposition passes
    through its exec to every worker and writer from birth, so a Ctrl-C to the process group (a terminal's)
    reaches only the coordinator, even while a child is still starting. A dead resource tracker is started again
    on the way, with a warning that does not apply: no segment of ours is tracked. `prep run` calls it as soon as
    it knows its pipeline, so that the forkserver imports the heavy modules while the coordinator checks the
    request. `compiled`: which compiled code it loads too (`PipelineConfig.compiled_code`: what the pipeline runs)."""
    single_thread_env()  # inherited by every worker: one tokenizer thread each
    # Every child runs the main script again (multiprocessing's preparation; Python 3.11's forkserver cannot preload
    # "__main__" itself): for the `prep` command that imports the CLI and typer, imported once here instead.
    if compiled is not None:
        _compiled[0] = tuple(compiled)
    extra = [_PRELOAD_COMPILED[part] for part in _compiled[0]]
    mp.get_context("forkserver").set_forkserver_preload(_PRELOAD + extra)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TRACKER_WARNING)
            forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _forkserver_pid() -> int | None:
    return getattr(forkserver._forkserver, "_forkserver_pid", None)  # noqa: SLF001 - no public way to ask


def kill_forkserver() -> None:
    """Kill this process's forkserver, if one was started, without waiting: at the end of the `prep` command, when
    its children are gone. Left alone, it would notice and tear down numba and the rest, holding the command's
    stdout meanwhile (`prep run ... | tee log` stayed open 0.35-1.8 s after the command under load)."""
    pid = _forkserver_pid()
    if pid is not None:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def forkserver_alive() -> bool:
    """Whether this process's forkserver runs, asked without reaping it (multiprocessing reaps it when it starts
    a new one). The check lets a run touch its SIGINT handler only when a forkserver must really be started."""
    pid = _forkserver_pid()
    if pid is None:
        return False
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
    except ChildProcessError:
        return False
