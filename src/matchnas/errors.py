"""The one exception type a user sees.

Library code raises :class:`MatchnasError` for anything a user can fix (bad input, a missing
package, a config from another space). The command line prints its message on one line and exits
non-zero; every other exception is a bug and keeps its traceback.
"""


class MatchnasError(Exception):
    """A user-facing error whose message names the culprit on one line."""
