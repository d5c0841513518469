"""Errors that reach the user as one clear line (exit 2) instead of a traceback."""


class UserError(Exception):
    """A problem the user can fix: bad path, bad flag, bad field, existing output."""

    exit_code = 2


class RunFailed(Exception):
    """The run cannot go on (e.g. workers keep dying at start); said in one line, exit 1."""
