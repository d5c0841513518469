"""The forkserver that every worker and writer is forked from, with the heavy modules already imported.

Its own module, light to import, so that `prep run` can start it first of all: the forkserver's imports
(pyarrow, tokenizers, the compiled features) then run while the command line's own are still loading.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import secrets
import signal
import tempfile
import time
import warnings
from collections.abc import Sequence
from multiprocessing import forkserver
from pathlib import Path

from prep.core.threads import single_thread_env

TRACKER_WARNING = "resource_tracker: process died unexpectedly"  # a new one is started; it tracks nothing of ours


_PRELOAD = ["prep.engines.local.preload", "prep.engines.local.preload_compiled"]
PRELOAD_COMPILED = {"features": "prep.engines.local.preload_features", "rules": "prep.engines.local.preload_rules"}
# What a starting forkserver loads besides: the compiled code's names, or (started early) a file that will hold them.
CHOICE_ENV = "PREP_FORKSERVER_COMPILED"
_compiled = [("features",)]  # the compiled code the forkserver loads: the first start decides, restarts follow
_told = [True]  # whether the running forkserver was told it (one started early waits for it)
_choice: list[Path | None] = [None]  # the file that tells one started early (`_choice_file`)


def start_forkserver(compiled: Sequence[str] | None = None, *, early: bool = False) -> None:
    """Start the forkserver (unless it runs), with its preload, while SIGINT is ignored: the disposition passes
    through its exec to every worker and writer from birth, so a Ctrl-C to the process group (a terminal's)
    reaches only the coordinator, even while a child is still starting. A dead resource tracker is started again
    on the way, with a warning that does not apply: no segment of ours is tracked.

    `compiled`: which compiled code it loads too (`PipelineConfig.compiled_code`: what the pipeline runs). `early`:
    `prep run` starts it before its command line is parsed (`prep.launch`), when that is not known yet; the
    forkserver imports the rest meanwhile and waits for it, which the next call that passes `compiled` gives
    (through a file: where none can be written, it is not started early)."""
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
                os.environ[CHOICE_ENV] = str(_choice_file())
            except OSError:  # no file to tell it through: it starts later, told at its start
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


def _choice_file() -> Path:
    """The file in which this process tells a forkserver it started early the compiled code to load: a name of its
    own, not yet there."""
    if _choice[0] is None:
        _choice[0] = Path(tempfile.gettempdir()) / f"prep-{os.getpid()}-{secrets.token_hex(8)}.compiled"
    return _choice[0]


def _tell(parts: Sequence[str]) -> None:
    """Write the choice whole, then give it its name: the forkserver never reads half of it."""
    path = _choice_file()
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(" ".join(parts) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _told[0] = True


def await_choice(timeout: float = 60.0) -> tuple[str, ...]:
    """In the forkserver: the compiled code to load, as its starter said, at the start or (started early) once it
    says it (the file is then removed). Nothing if its starter died first, or took over `timeout` seconds: the
    workers then load what they run themselves."""
    said = os.environ.get(CHOICE_ENV, "")
    if os.path.isabs(said):
        path, said = Path(said), ""
        starter, deadline = os.getppid(), time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileNotFoundError):
                said = path.read_text(encoding="utf-8")
                path.unlink(missing_ok=True)
                break
            if os.getppid() != starter or time.monotonic() > deadline:
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
    if _choice[0] is not None:  # told, but killed before it read it
        _choice[0].unlink(missing_ok=True)


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
