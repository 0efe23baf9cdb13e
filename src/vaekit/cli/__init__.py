"""The `vaekit` command line: train, evaluate, sample, reconstruct, encode, decode, disentanglement, plot,
report, explain.

    vaekit train --dataset digits --latent-dim 8 --hidden 128 --epochs 100 --out runs/digits
    vaekit evaluate runs/digits --k 1000 --json
    vaekit sample runs/digits --n 64
    vaekit reconstruct runs/digits --n 32

Settings resolve as defaults < `--config FILE` (TOML or JSON) < flags; the resolved config is
saved in the run directory. Errors print one line and exit with status 2 (`--debug` shows the
traceback). `flags` makes the train flags from the config, `commands` holds what each
subcommand does, `parser` wires them, and `main` runs one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from ..errors import NonFiniteEstimateError, TrainingInterrupted, VaekitError, one_line, quiet_start
from ..evaluation.overflow import overflows, refused, weights_refusal
from ..training.distributed import from_env
from .runs import run_data_changed

with quiet_start():  # a Ctrl-C while the commands' modules are imported: one line
    import torch

    from ..evaluation.estimates import MAX_IMPORTANCE_SAMPLES
    from ..runs.config import MAX_COUNT, MAX_SEED
    from .arguments import load_plugins_first, parser
    from .flags import build_config

__all__ = ["build_config", "main", "parser"]


PATHS = ("out", "output", "data", "latents", "run", "dataset", "config", "data_dir", "data.dataset", "data.schema",
         "data.data_dir", "train.init_from")  # the arguments that name a file or folder
MAX_PATH = 4095  # bytes: Linux's PATH_MAX less the final NUL


def _check_path(args, name: str) -> None:
    """A path argument the file system takes: names of ≤ 255 bytes, ≤ MAX_PATH bytes in all; a run's folder in
    UTF-8 (safetensors, which holds its weights, opens no other path)."""
    value = getattr(args, name, None)
    if not isinstance(value, str) or not value:
        return
    flag = "RUN" if name == "run" else "--" + name.split(".")[-1].replace("_", "-")
    raw = os.fsencode(value)
    long = [part for part in raw.split(os.fsencode(os.sep)) if len(part) > 255]
    if long:
        raise VaekitError(f"{flag}: the name {os.fsdecode(long[0][:40])}… is {len(long[0])} bytes; file systems take "
                          "at most 255 a name: choose a shorter one")
    if len(raw) > MAX_PATH:
        raise VaekitError(f"{flag}: the path is {len(raw):,} bytes; file systems take at most {MAX_PATH:,}: choose a "
                          "shorter one")
    run = name == "run" or name == "out" and args.command in ("train", "reproduce")
    if run and any("\udc80" <= c <= "\udcff" for c in value):  # bytes not UTF-8, as Python decodes them
        raise VaekitError(f"{flag} {value!r}: not valid UTF-8; a run's weights are written with safetensors, which "
                          "opens only UTF-8 paths: rename it")


def check_args(args) -> None:
    """What argparse's types do not check: counts > 0, paths that are not empty; --threads applied."""
    threads = getattr(args, "threads", None)
    if threads is not None:
        if not 0 < threads <= 4096:
            raise VaekitError(f"--threads must be a number of threads from 1 to 4096, got {threads}")
        torch.set_num_threads(threads)
    for name in ("n", "k", "elbo_samples", "samples"):
        value = getattr(args, name, None)
        if value is not None and not 0 < value <= MAX_COUNT:
            flag = "--" + name.replace("_", "-")
            raise VaekitError(f"{flag} must be > 0, got {value}" if value <= 0 else f"{flag} = {value} is out of range "
                              f"(at most {MAX_COUNT})")
    samples = getattr(args, "elbo_samples", None)
    if samples is not None and samples > MAX_IMPORTANCE_SAMPLES:  # the API's own refusal names its keyword
        raise VaekitError(f"--elbo-samples {samples} is out of range: draws per example from 1 to "
                          f"{MAX_IMPORTANCE_SAMPLES:,}")
    seed = getattr(args, "seed", None)
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise VaekitError(f"--seed must be a whole number from 0 to {MAX_SEED} (what torch's generators take), got {seed}")
    for name in PATHS:
        _check_path(args, name)
    for name in ("out", "output"):
        if getattr(args, name, None) == "":
            raise VaekitError(f"--{name} is empty; name a path")
    if args.command not in ("train", "reproduce") and getattr(args, "out", None):
        _out_reads_nothing(args)


def _out_reads_nothing(args) -> None:
    """`--out` must not name what the command reads, or a run's own file: `encode RUN --out DATA.npy` wrote the
    codes over the run's training data (a resume then trained on them), `score --data t.csv --out t.csv` replaced
    the table with its scores."""
    from ..runs import checkpoint as ckpt  # the run's files and its recorded data file

    outs = [Path(args.out)] + ([Path(args.out).with_suffix(".npy")] if args.command == "sample" else [])
    read = [(f"--{name}", getattr(args, name, None)) for name in ("dataset", "data", "latents", "schema")]
    run = getattr(args, "run", None)
    if run is not None:
        read += [(f"the run's {name}", Path(run) / name) for name in (ckpt.CONFIG, ckpt.WEIGHTS, ckpt.STATE,
                                                                      ckpt.STANDARDIZATION, "metrics.jsonl")]
        try:
            read.append(("the run's training data", ckpt.load_config(Path(run)).data.dataset))
        except VaekitError:  # the command itself says what is wrong with the run
            pass
    for out in outs:
        for what, path in read:
            if path and _same_file(out, Path(path)):
                raise VaekitError(f"--out {out}: is {what}, which this command reads; write to another file")
            folders = what in ("--dataset", "the run's training data")  # score's --data, --latents: files alone
            if path and folders and _is_dir(Path(path)) and _inside(out, Path(path)):  # a folder of images it reads
                raise VaekitError(f"--out {out}: lies in {what} ({path}), which this command reads; write elsewhere")


def _is_dir(path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long, say: the command's own reading says so in one line
        return False


def _inside(a, folder) -> bool:
    try:
        return Path(os.path.realpath(a)).is_relative_to(os.path.realpath(folder))
    except (OSError, ValueError):
        return False


def _same_file(a, b) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)  # links, hard links, ./ and ../ spellings
    except (OSError, ValueError):
        return False


def _out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, MemoryError) or "can't allocate" in text or "out of memory" in text.lower()


def _flags_of(command: str, wanted: tuple[str, ...]) -> list[str]:
    """Those of `wanted` that `vaekit COMMAND` takes (an error's advice names no flag the command lacks)."""
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    taken = {option for action in sub._actions for option in action.option_strings}
    return [flag for flag in wanted if flag in taken]


MAX_MESSAGE = 2000  # an error quoting a 10 MB key of a --config file is still one readable line


class UnwritableOutput(Exception):
    """A write to stdout failed (a full disk: `> /dev/full`), told apart from any other OSError."""


class _Output:
    """stdout while a command runs: a write or flush that fails raises UnwritableOutput (a reader that left still
    raises BrokenPipeError)."""

    def __init__(self, stream):
        self._stream = stream

    def _do(self, method: str, *args):
        if self._stream is None:  # closed (`>&-`): Python's sys.stdout is None, and print would drop every line
            raise UnwritableOutput("it is closed")
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            raise
        except OSError as e:
            raise UnwritableOutput(e.strerror or str(e)) from None

    def write(self, text: str):
        try:
            return self._do("write", text)
        except UnicodeEncodeError:  # a file name not in UTF-8, on a stream that takes only UTF-8: its bytes escaped
            return self._do("write", text.encode("utf-8", "backslashreplace").decode("utf-8"))

    def flush(self) -> None:
        if self._stream is not None:  # closed: only a line written to it is lost
            self._do("flush")

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


class _Lines(logging.Formatter):
    """The message alone; a warning's on one line (a file name's newline written `\\n`), as a refusal's is."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return one_line(text) if record.levelno >= logging.WARNING else text


def _say(line: str) -> None:
    """A refusal's one line on stderr; a stderr that cannot be written (`2> /dev/full`) takes nothing, and the exit
    status still says it; a closed one (`2>&-`: sys.stderr is None) is not swapped for stdout."""
    try:
        if sys.stderr is not None:
            print(one_line(line), file=sys.stderr, flush=True)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    stdout, sys.stdout = sys.stdout, _Output(sys.stdout)  # --help's text included
    try:
        with quiet_start(always=True):  # a Ctrl-C while plugins load or the parser is built
            try:
                load_plugins_first(argv)
            except VaekitError as e:
                _say(f"vaekit: error: {e}")
                return 2
            args = parser().parse_args(argv)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_Lines())
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, handlers=[handler])
        return _run(args)
    except UnwritableOutput as e:  # stdout on a full disk (`> /dev/full`), or closed: the results' files are written
        if stdout is not None:  # what it still holds goes nowhere at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        _say(f"vaekit: error: cannot write to standard output ({e})")
        return 2
    finally:
        sys.stdout = stdout


def _run(args: argparse.Namespace) -> int:
    """The command `args` names, and its exit status: 0, or a refusal's one line and its status."""
    try:
        check_args(args)
        try:
            args.func(args)
        except (MemoryError, RuntimeError) as e:
            if not _out_of_memory(e):
                raise
            said = (str(e).splitlines() or [type(e).__name__])[0][:160]  # a MemoryError may say nothing
            flags = _flags_of(args.command, ("--n", "--batch-size", "--hidden", "--k", "--elbo-samples", "--train-k", "--draws",
                                             "--num-samples"))
            smaller = f": a smaller {', '.join(flags[:-1])} or {flags[-1]}" if len(flags) > 1 else \
                f": a smaller {flags[0]}" if flags else ""
            raise VaekitError(f"out of memory ({said}); ask for less{smaller}") from None
        except ValueError as e:  # torch.distributions refusing what the weights made (a scale ≤ 0, an overflow)
            if isinstance(e, NonFiniteEstimateError) and (changed := run_data_changed(args)):  # its verdict: the weights
                raise VaekitError(f"{e.what}, and {changed}; restore that file before judging the weights") from None
            if not overflows(e):
                raise
            said, changed = refused(e), run_data_changed(args)
            if changed:  # not the data the weights were trained on: nothing here tells the weights' fault
                raise VaekitError(f"the model makes an invalid distribution ({said}), and {changed}; restore that "
                                  "file before judging the weights") from None
            temperature = getattr(args, "temperature", None)
            if temperature is not None and temperature != 1.0:  # p(z) scaled so far that a layer's output overflows
                raise VaekitError(f"the model's distributions overflow at --temperature {temperature:g} ({said}); use a "
                                  "smaller one") from None
            if getattr(args, "dataset", None) or getattr(args, "data", None):  # data of the user's: either may be at fault
                unread = "; ".join(getattr(e, "__notes__", ()))  # the run's own rows, which would have told
                raise VaekitError(f"the model makes an invalid distribution ({said}): the data lie far outside what the "
                                  "run was trained on, or its model.safetensors is damaged or was trained into overflow"
                                  + (f"; {unread}" if unread else " (`vaekit evaluate RUN` on the run's own data fails "
                                     "only for the weights)")) from None
            raise VaekitError(weights_refusal(e)) from None
        sys.stdout.flush()  # a stdout that cannot be written fails here, where it is said, not at exit
    except BrokenPipeError:  # the reader of stdout left (`vaekit evaluate RUN --json | head -c 100`), as for cat
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the interpreter's last flush goes nowhere
        return 141  # 128 + SIGPIPE: what a shell tool stopped by it returns
    except (VaekitError, KeyboardInterrupt) as e:
        if args.debug:
            raise
        said = str(e) if len(str(e)) <= MAX_MESSAGE else f"{str(e)[:MAX_MESSAGE]}… (cut at {MAX_MESSAGE:,} characters)"
        _say(f"vaekit: error: {said}" if said else "vaekit: interrupted")
        if isinstance(e, TrainingInterrupted):
            return 128 + e.signum
        return 130 if isinstance(e, KeyboardInterrupt) else 2
    return 0


def entry() -> None:
    """The `vaekit` command (and `python -m vaekit`): `main`, then leave with its exit status.

    Under torchrun, and after a refusal, the process leaves without the interpreter's finalization: every file is
    written by now, but gloo work objects that DDP's hooks on the model keep alive can be freed during finalization,
    after their process group, and abort the process (SIGABRT, "terminate called without an active exception";
    pytorch/pytorch#179291), which torchrun reports as a failed job; and after a Parquet table was read (pyarrow's
    threads beside torch's) finalization aborted one refused command in four, exit status 134 instead of 2."""
    code = main()
    launch = from_env()
    if code != 0 or launch is not None and launch.world_size > 1:
        logging.shutdown()
        for stream in filter(None, (sys.stdout, sys.stderr)):  # None: closed (`2>&-`)
            try:
                stream.flush()
            except OSError:  # a stream that cannot be written (a full disk): the exit status says what happened
                pass
        os._exit(code)
    sys.exit(code)
