"""The exception types a user sees.

Library code raises :class:`MatchnasError` for anything a user can fix (bad input, a missing
package, a config from another space). The command line prints its message on one line and exits
with the error's ``exit_status``; every other exception is a bug and keeps its traceback.
"""


class MatchnasError(Exception):
    """A user-facing error whose message names the culprit on one line."""

    exit_status = 2


class Interrupted(MatchnasError):
    """The user pressed Ctrl-C (SIGINT) or the job was stopped (SIGTERM); the message says what
    was saved and how to continue. The exit status is what a shell reports for a process killed
    by that signal: 128 + 2 = 130 for Ctrl-C, 128 + 15 = 143 for SIGTERM."""

    exit_status = 130

    def __init__(self, message: str, signum: int = 2) -> None:
        super().__init__(message)
        self.exit_status = 128 + signum
