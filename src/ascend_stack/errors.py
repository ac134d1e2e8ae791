"""The one error type users see: a single line saying what is wrong and what to do."""


class UserError(Exception):
    """Bad input or environment. Tasks print ``str(err)`` as one line and exit non-zero."""

    exit_code = 2
