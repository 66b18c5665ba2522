"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""


class SmartquantError(Exception):
    """Bad input or a failed precondition, described for a user (no traceback needed)."""
