"""Every exception type vaekit raises. The CLI prints any of them as one line (exit status 2; 128 + the
signal's number for an interruption: 130 for Ctrl-C, 143 for SIGTERM)."""

import itertools
import os
import signal
import sys
import unicodedata


class VaekitError(ValueError):
    """Bad input or a bad run directory: the message names the file, field, shape or value."""


class NonFiniteLossError(VaekitError):
    """The loss, a gradient or an update became NaN or Inf; nothing was saved from it."""


class NonFiniteEstimateError(VaekitError):
    """An estimate (a log-likelihood, a posterior's spread) is NaN or Inf for some examples: the model's outputs
    overflowed. `what`: the estimate, in a few words, for a message that goes on to say why."""

    def __init__(self, message: str, what: str = "an estimate is not finite"):
        super().__init__(message)
        self.what = what


class TrainingInterrupted(VaekitError):
    """Ctrl-C or SIGTERM: the run stopped after a whole step and saved a checkpoint."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)


class PluginError(VaekitError):
    """A plugin file or module could not be imported, or a run needs a plugin that was not given."""


def one_line(text: str) -> str:
    """`text` with its control characters and line breaks written as escapes (`\\n`, `\\x1b`): a file named with a
    newline, or a value holding one, keeps a refusal on one line and sends no escape sequence to the terminal."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in text)


def is_the_command() -> bool:
    """Whether this process is the `vaekit` command (its script, or `python -m vaekit`, under torchrun too)."""
    argv = getattr(sys, "orig_argv", [])
    return os.path.basename(sys.argv[0]) == "vaekit" or ("-m", "vaekit") in itertools.pairwise(argv)


class quiet_start:  # a context manager, named as contextlib's are
    """Around the command's first seconds (Python importing torch, the parser built): a Ctrl-C there ends as one
    line and 130, as it does later, not as a traceback out of an import. In a program that imports vaekit it does
    nothing: the KeyboardInterrupt is that program's."""

    def __init__(self, always: bool = False):
        self.always = always

    def __enter__(self):
        return self

    def __exit__(self, kind, value, trace):
        if kind is not KeyboardInterrupt or not (self.always or is_the_command()):
            return False
        print("vaekit: interrupted while starting; nothing was written", file=sys.stderr, flush=True)
        os._exit(130)  # at once: an exit unwound through half-done imports could still end by the signal (-2)
