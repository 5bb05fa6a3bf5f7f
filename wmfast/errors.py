"""One exception type for bad input, so the CLI can print one line and exit with code 2."""


class WmfastError(ValueError):
    """Bad input: wrong shape/dtype, missing or corrupt file, config mismatch, ..."""
