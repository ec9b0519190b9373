"""The exception types a user sees.

Library code raises :class:`MatchnasError` for anything a user can fix (bad input, a missing
package, a config from another space). The command line prints its message on one line and exits
with the error's ``exit_status``; every other exception is a bug and keeps its traceback.
"""


class MatchnasError(Exception):
    """A user-facing error whose message names the culprit on one line."""

    exit_status = 2


class Interrupted(MatchnasError):
    """The user pressed Ctrl-C (SIGINT); the message says what was saved and how to continue."""

    exit_status = 130  # 128 + SIGINT, what a shell reports for a process killed by Ctrl-C
