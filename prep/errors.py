"""Errors that reach the user as one clear line instead of a traceback (exit 2, 1, or 128 + the signal)."""

import contextlib
import signal
from collections.abc import Iterator


class UserError(Exception):
    """A problem the user can fix: bad path, bad flag, bad field, existing output."""

    exit_code = 2


class RunFailed(Exception):
    """The run cannot go on (e.g. workers keep dying at start); said in one line, exit 1."""


class Interrupted(Exception):
    """SIGINT or SIGTERM reached the coordinator."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextlib.contextmanager
def interruptible() -> Iterator[None]:
    """SIGINT and SIGTERM end the run through Interrupted (exit 130/143, with a word on --resume)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def interrupt(signum, _frame):
        raise Interrupted(signum)

    for s in previous:
        signal.signal(s, interrupt)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
