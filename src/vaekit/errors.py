"""The one exception type vaekit raises for bad input; the CLI prints it as one line."""


class VaekitError(ValueError):
    """Bad input or a bad run directory: the message names the file, field, shape or value."""
