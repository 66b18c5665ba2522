"""The shape every refused command's error must have: one line, `smartquant COMMAND: error: ...`."""


def assert_one_line_error(err: str, command: str, *needles: str) -> None:
    """`err` (a command's stderr) is one line `smartquant COMMAND: error: ...` containing every needle."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"smartquant {command}: error: "), err
    for needle in needles:
        assert needle in err, err
