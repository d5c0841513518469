"""The forkserver that every worker and writer is forked from, with the heavy modules already imported.

Its own module, light to import, so that `prep run` can start it first of all: the forkserver's imports
(pyarrow, tokenizers, the compiled features) then run while the command line's own are still loading.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import time
import warnings
from collections.abc import Sequence
from multiprocessing import forkserver

from prep.core.threads import single_thread_env

TRACKER_WARNING = "resource_tracker: process died unexpectedly"  # a new one is started; it tracks nothing of ours


_PRELOAD = ["prep.engines.local.preload", "prep.engines.local.preload_compiled"]
PRELOAD_COMPILED = {"features": "prep.engines.local.preload_features", "rules": "prep.engines.local.preload_rules"}
# What a starting forkserver loads besides: the compiled code's names, or (started early) where its starter will
# write them: the /proc path of the starter's anonymous file (`_choice_path`).
CHOICE_ENV = "PREP_FORKSERVER_COMPILED"
_compiled = [("features",)]  # the compiled code the forkserver loads: the first start decides, restarts follow
_told = [True]  # whether the running forkserver was told it (one started early waits for it)
_choice: list[int | None] = [None]  # the anonymous file that tells one started early (`_choice_fd`)


def start_forkserver(compiled: Sequence[str] | None = None, *, early: bool = False) -> None:
    """Start the forkserver (unless it runs), with its preload, while SIGINT is ignored: the disposition passes
    through its exec to every worker and writer from birth, so a Ctrl-C to the process group (a terminal's)
    reaches only the coordinator, even while a child is still starting. A dead resource tracker is started again
    on the way, with a warning that does not apply: no segment of ours is tracked.

    `compiled`: which compiled code it loads too (`PipelineConfig.compiled_code`: what the pipeline runs). `early`:
    `prep run` starts it before its command line is parsed (`prep.launch`), when that is not known yet; the
    forkserver imports the rest meanwhile and waits for it, which the next call that passes `compiled` gives
    (through an anonymous file of this process: where there can be none, it is not started early)."""
    single_thread_env()  # inherited by every worker: one tokenizer thread each
    if compiled is not None:
        _compiled[0] = tuple(compiled)
    alive = forkserver_alive()
    if alive and not _told[0] and compiled is not None:
        try:
            _tell(_compiled[0])
        except OSError:  # it would wait in vain: one that is told at its start replaces it
            _kill_and_wait()
            alive = False
    if not alive:
        if early:
            try:
                os.environ[CHOICE_ENV] = _choice_path()
            except OSError:  # no anonymous file to tell it through: it starts later, told at its start
                return
        else:
            os.environ[CHOICE_ENV] = " ".join(_compiled[0])
        _told[0] = not early
    # Every child runs the main script again (multiprocessing's preparation): for the `prep` command that is
    # `prep.launch`, which imports nothing heavy. Python 3.11's forkserver cannot preload "__main__" itself.
    mp.get_context("forkserver").set_forkserver_preload(_PRELOAD)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=TRACKER_WARNING)
            forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


def _choice_fd() -> int:
    """This process's anonymous file (memfd) in which it tells a forkserver it started early the compiled code to
    load, which reads it through /proc. It has no name in any directory, so nothing is left behind however the two
    die: a named file in the temp directory was, when a job's whole process group was SIGKILLed during its start."""
    if _choice[0] is None:
        _choice[0] = os.memfd_create("prep-forkserver-choice")  # close-on-exec: read through /proc, not inherited
    return _choice[0]


def _choice_path() -> str:
    return f"/proc/{os.getpid()}/fd/{_choice_fd()}"


def _tell(parts: Sequence[str]) -> None:
    """One write that ends in a newline: the forkserver takes the choice only once it reads the newline."""
    os.pwrite(_choice_fd(), (" ".join(parts) + "\n").encode(), 0)
    _told[0] = True


def await_choice(timeout: float = 60.0) -> tuple[str, ...]:
    """In the forkserver: the compiled code to load, as its starter said, at the start or (started early) once it
    writes it. Nothing if its starter is gone first (its /proc entry with it), or took over `timeout` seconds: the
    workers then load what they run themselves."""
    said = os.environ.get(CHOICE_ENV, "")
    if os.path.isabs(said):
        path, said = said, ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with open(path, encoding="utf-8") as f:
                    written = f.read()
            except OSError:  # the starter is gone, or its file cannot be read from here
                break
            if written.endswith("\n"):
                said = written
                break
            time.sleep(0.001)
    return tuple(part for part in said.split() if part in PRELOAD_COMPILED)


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


def _kill_and_wait() -> None:
    """Kill the forkserver and wait until it is dead, leaving it for multiprocessing to reap when it starts the
    next (which would otherwise take a dying one for alive)."""
    pid = _forkserver_pid()
    kill_forkserver()
    if pid is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


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
