"""The one exception type for bad input: the CLI prints its message on one line and exits 2."""

import contextlib


class SmartquantError(Exception):
    """Bad input or a failed precondition, described for a user (no traceback needed)."""


@contextlib.contextmanager
def about_tensor(name: str):
    """Prefix any SmartquantError raised inside with `tensor NAME: `."""
    try:
        yield
    except SmartquantError as exc:
        raise SmartquantError(f"tensor {name!r}: {exc}") from None
