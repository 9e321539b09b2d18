"""The one error type that reaches the user as a one-line message and exit code 2."""


class UserError(Exception):
    """Bad input the user can fix: the CLI prints `error: <message>` and exits 2, no traceback.

    The message is one line naming the problem and the fix.
    """
