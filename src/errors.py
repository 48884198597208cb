"""The one exception type for problems the user can fix (bad input, bad config)."""


class UserError(Exception):
    """Reported as a single line, exit code 2, without a traceback."""
