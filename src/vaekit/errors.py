"""Every exception type vaekit raises. The CLI prints any of them as one line (exit status 2; 130 for
an interruption)."""


class VaekitError(ValueError):
    """Bad input or a bad run directory: the message names the file, field, shape or value."""


class NonFiniteLossError(VaekitError):
    """The loss or a gradient became NaN or Inf; nothing was stepped with it."""


class TrainingInterrupted(VaekitError):
    """Ctrl-C: the run stopped after a whole step and saved a checkpoint."""


class PluginError(VaekitError):
    """A plugin file or module could not be imported, or a run needs a plugin that was not given."""
