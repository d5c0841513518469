"""Errors that reach the user as one clear line instead of a traceback (exit 2, 1, or 128 + the signal)."""

import signal


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
