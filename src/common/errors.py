"""Exceptions reported to the user as one line, without a traceback."""


class UserError(Exception):
    """A problem the user can fix (bad input, bad config): exit code 2."""

    exit_code = 2


class RunStopped(Exception):
    """A run that stopped early after saving what it had (NaN, Ctrl-C, SIGTERM)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM, after saving a checkpoint: exit 128 + signal number.

    A BaseException, like KeyboardInterrupt, so that a sweep stops too instead of going on
    to its next job (a cluster pre-empting a job wants the process gone).
    """

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
