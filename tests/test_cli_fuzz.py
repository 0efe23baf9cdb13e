"""A fuzzer over the command line: generated flags and values for every subcommand, run in-process.

Each case must end with exit status 0, or 2 and one line "vaekit: error: …" — never a traceback
(an exception escaping `main`) and never argparse's usage dump for a value argparse accepted. The
flags and their choices are read from the parser itself, so a new flag is fuzzed without an edit.
Derandomized (a fixed seed): CI sees the same cases every run, in well under a minute.
"""

import argparse
import random
import shutil
import signal

import pytest

from vaekit.cli import main, parser

SEED, TRAIN_CASES, RUN_CASES = 20261127, 36, 24
INTS = ["-1", "0", "1", "2", "3", "7", str(2**31), str(2**63), str(10**11)]
WORK = {"--k", "--elbo-samples"}  # a large valid value is a long computation, not an error: only small or invalid ones
WORK_INTS = ["-1", "0", "1", "2", "7", str(2**63)]
FLOATS = ["-1", "0", "1e-300", "0.5", "1", "3", "1e38", "1e400", "nan", "inf", "-inf"]
WORDS = ["", "x", "none", "-", "../..", "é" * 300, "digits", "wine"]
NOT_FUZZED = {"--help", "--out", "--config", "--plugin", "--resume", "--device", "--tensorboard", "--debug", "--quiet",
              "--epochs",  # a value of 10¹¹ would train for ever, not fail
              "--compile", "--no-compile", "--cuda-graphs", "--no-cuda-graphs",
              "--threads",  # sets this process's torch threads: the bit-for-bit comparisons after it would see it
              "--track"}  # MLflow and W&B write their stores in the working folder, not in the run (tests/test_tracking.py)


def flags_of(command):
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    return [a for a in sub._actions if a.option_strings and not set(a.option_strings) & NOT_FUZZED]


def value_for(action, rng):
    if action.nargs == 0:  # store_true / store_const / BooleanOptionalAction
        return []
    if action.choices is not None and rng.random() < 0.8:
        return [rng.choice(list(action.choices))]
    pool = {int: WORK_INTS if set(action.option_strings) & WORK else INTS, float: FLOATS}.get(action.type, WORDS)
    return [rng.choice(pool)]


def case(command, rng, fixed):
    argv = list(fixed)
    flags = flags_of(command)
    for action in rng.sample(flags, k=min(len(flags), rng.randint(1, 3))):
        argv += [rng.choice(action.option_strings), *value_for(action, rng)]
    return argv


def timed_out(signum, frame):
    raise TimeoutError("a case ran for 60 s")


def check(argv, capsys):
    previous = signal.signal(signal.SIGALRM, timed_out)
    signal.alarm(60)
    try:
        code = main(argv)
    except SystemExit as e:  # argparse refusing a value it cannot parse: exit 2 with its usage line
        code = e.code
    except Exception as e:  # noqa: BLE001 - what the fuzzer is here to find
        pytest.fail(f"{argv} escaped with {type(e).__name__}: {e}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    assert code in (0, 2), (argv, code, err[-500:])
    assert "Traceback" not in err, (argv, err[-2000:])
    if code == 2:
        assert err.strip().splitlines()[-1].startswith(("vaekit: error:", "vaekit train: error:", "vaekit evaluate: error:",
                                                         "vaekit sample: error:", "vaekit reconstruct: error:",
                                                         "vaekit plot: error:", "vaekit report: error:")), (argv, err)


def test_train_flags_never_escape(tmp_path, capsys):
    rng = random.Random(SEED)
    for i in range(TRAIN_CASES):
        out = tmp_path / f"run{i}"
        data = rng.choice([["--dataset", "digits"], ["--dataset", "wine", "--likelihood", "gaussian", "--standardize"]])
        check(case("train", rng, ["--quiet", "train", "--out", str(out), "--epochs", "1", *data]), capsys)
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz") / "run"
    assert main(["--quiet", "train", "--out", str(out), "--epochs", "1", "--latent-dim", "2", "--hidden", "16"]) == 0
    return out


def test_run_commands_never_escape(run, tmp_path, capsys):
    rng = random.Random(SEED + 1)
    for i in range(RUN_CASES):
        command = rng.choice(["evaluate", "sample", "reconstruct", "encode", "evaluate", "sample", "plot", "report"])
        fixed = ["--quiet", command, str(run)]
        if command in ("sample", "reconstruct"):
            fixed += ["--output", str(tmp_path / f"{i}.png")]
        if command == "encode":
            fixed += ["--out", str(tmp_path / f"{i}.npz")]
        if command == "plot":
            fixed += ["--out", str(tmp_path / f"plots{i}")]
        check(case(command, rng, fixed), capsys)
