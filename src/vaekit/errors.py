"""Every exception type vaekit raises. The CLI prints any of them as one line (exit status 2; 128 + the
signal's number for an interruption: 130 for Ctrl-C, 143 for SIGTERM)."""

import signal


class VaekitError(ValueError):
    """Bad input or a bad run directory: the message names the file, field, shape or value."""


class NonFiniteLossError(VaekitError):
    """The loss, a gradient or an update became NaN or Inf; nothing was saved from it."""


class TrainingInterrupted(VaekitError):
    """Ctrl-C or SIGTERM: the run stopped after a whole step and saved a checkpoint."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


class PluginError(VaekitError):
    """A plugin file or module could not be imported, or a run needs a plugin that was not given."""
