"""What the twenty-third attack found (issue 27), each made for real."""

import errno
import json
import os

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from test_trust_attack5 import one_line

from vaekit.cli import main
from vaekit.files import write_error

TINY = ("--latent-dim", "2", "--hidden", "8", "--epochs", "1", "--seed", "1")


def _main(*argv):
    return main(["--quiet", *map(str, argv)])


def test_init_from_a_run_of_other_data_names_that_run(tmp_path, capsys):
    """F1: --init-from a table run onto digits said "model expects data of shape (3,)", a shape the user never asked
    for: it is that run's."""
    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal((60, 3)).astype(np.float32))
    assert _main("train", "--dataset", tmp_path / "d.npy", "--likelihood", "gaussian", *TINY, "--out", tmp_path / "T") == 0
    assert one_line(capsys, "train", "--dataset", "digits", "--init-from", tmp_path / "T", "--out", tmp_path / "I") == \
        f"--init-from {tmp_path / 'T'}: that run's model takes examples of shape (3,), but digits has (1, 8, 8); " \
        "start from a run trained on data of this shape"


def test_a_parts_table_without_a_name_keeps_the_part_and_python_only_fields_are_refused(tmp_path, capsys):
    """F2: the migration advice `[train.objective] beta = …` was then refused for having no name; a table of settings
    keeps the part (the default ELBO here). F3: [model] built_in_python in a --config made a run no command opens."""
    (tmp_path / "b.toml").write_text('[data]\ndataset = "digits"\n[train.objective]\nbeta = 4\n')
    assert _main("train", "--config", tmp_path / "b.toml", *TINY, "--out", tmp_path / "B") == 0
    objective = json.loads((tmp_path / "B" / "config.json").read_text())["train"]["objective"]
    assert (objective["name"], objective["beta"]) == ("elbo", 4.0)
    (tmp_path / "k.toml").write_text("[train.objective]\nkl_balance = 1\n")
    assert one_line(capsys, "train", "--dataset", "digits", "--config", tmp_path / "k.toml", "--out", tmp_path / "K") \
        == f"{tmp_path / 'k.toml'}: [train.objective] kl_balance: expected bool, got int 1"
    for field, value in (("built_in_python", "true"), ("python_parts", '["x"]'), ("unknown", '["model.hidden"]')):
        (tmp_path / "p.toml").write_text(f'[data]\ndataset = "digits"\n[model]\n{field} = {value}\n')
        assert one_line(capsys, "train", "--config", tmp_path / "p.toml", *TINY, "--out", tmp_path / "P") == \
            f"{tmp_path / 'p.toml'}: [model] {field} is written by vaekit for a model built in Python (vaekit.fit), " \
            "not a setting: no run trained from it could be opened; remove it"
        assert not (tmp_path / "P").exists()
    assert _main("train", "--config", tmp_path / "B" / "config.json", "--out", tmp_path / "C", "--epochs", "1") == 0


def test_patience_on_a_resume_without_validation_advises_what_a_resume_takes(tmp_path, capsys):
    """F4: --patience on resuming a --val-size 0 run advised --val-size N, which the resume then refused."""
    assert _main("train", "--dataset", "digits", *TINY, "--val-size", "0", "--out", tmp_path / "R") == 0
    assert one_line(capsys, "train", "--resume", "--out", tmp_path / "R", "--epochs", "2", "--patience", "3") == \
        "--patience 3 stops on the validation ELBO, but digits holds none out (--val-size 0): this run trains without " \
        "one, which a resume cannot change: --patience 0, or train a new run with --val-size N"


def test_a_folder_as_a_table_is_said_whatever_out_is(tmp_path, capsys, monkeypatch):
    """F5: score --data . --out s.csv said --out "lies in --data (.), which this command reads": score reads one file."""
    rows = "x,c\n" + "\n".join(f"{i / 10},{'ab'[i % 2]}" for i in range(30)) + "\n"
    (tmp_path / "t.csv").write_text(rows)
    assert _main("train", "--dataset", tmp_path / "t.csv", "--likelihood", "mixed", *TINY, "--out", tmp_path / "T") == 0
    monkeypatch.chdir(tmp_path)
    for command in ("score", "impute"):
        assert one_line(capsys, command, "T", "--data", ".", "--out", "s.csv") == ".: not a regular file (a folder)"


def test_a_full_disk_advises_running_the_command_again():
    """F6: every writer's full disk said "continue with --resume", a flag only train has."""
    said = str(write_error("RUN/samples.png", OSError(errno.ENOSPC, "No space left on device")))
    assert said == "RUN/samples.png: cannot write (the disk is full: free space, then run the command again (a " \
        "training run: with --resume))"


@pytest.mark.parametrize(("field", "value"), [("spread", 1e-29), ("shift", 1e20)])
def test_damaged_statistics_are_blamed_not_the_weights(tmp_path, capsys, field, value):
    """F7: a standardization.safetensors damaged (spread 1e-29, shift 1e20) made evaluate and encode say the weights
    were damaged and advise retraining; the statistics are checked against the training split first."""
    run = tmp_path / "S"
    assert _main("train", "--dataset", "wine", "--likelihood", "gaussian", "--standardize", *TINY, "--out", run) == 0
    stats = load_file(run / "standardization.safetensors")
    stats[field].fill_(value)
    save_file(stats, run / "standardization.safetensors")
    blamed = f"and {run / 'standardization.safetensors'} is not the statistics of the run's training split (damaged, " \
        "or of other data); restore that file before judging the weights"
    for command in (("evaluate", run, "--k", "2"), ("encode", run, "--out", tmp_path / "e.npy")):
        said = one_line(capsys, *command)
        assert said.endswith(blamed) and "retrain" not in said, said


def test_statistics_as_trained_are_told_from_others():
    """The check F7 rests on: a dataset standardized by its training split's statistics, and by others."""
    from vaekit.data import load_dataset

    ds = load_dataset("wine", support="real", standardize=True)
    assert ds.standardized_as_trained()
    assert not ds.with_standardization(ds.shift, ds.spread * (1 + 1e-6)).standardized_as_trained()
    assert load_dataset("wine", support="real").standardized_as_trained()  # nothing to check


def test_a_fit_killed_while_it_swaps_folders_leaves_a_sampler(tmp_path, capsys):
    """F11: the earlier two-stage sampler was removed before the new one was renamed in: a kill between the two left
    neither where `sample` looks, and the next fit removed the finished one. The earlier is renamed aside first; a
    reader finds the whole one, and the next fit puts it in place."""
    import shutil

    run = tmp_path / "R"
    assert _main("train", "--dataset", "digits", *TINY, "--out", run) == 0
    assert _main("fit-sampler", run, "--sampler", "two-stage", "--epochs", "1", "--hidden", "8") == 0
    folder = run / "samplers"

    def drawn(name):
        assert _main("sample", run, "--sampler", "two-stage", "--n", "4", "--out", tmp_path / f"{name}.png") == 0
        return np.load(tmp_path / f"{name}.npy")

    before = drawn("before")
    os.replace(folder / "two-stage", folder / "two-stage.old")  # killed after the first rename: both lie aside
    shutil.copytree(folder / "two-stage.old", folder / "two-stage.fitting")
    assert np.array_equal(drawn("finished"), before)  # the new fit, finished (here: the same weights)
    (folder / "two-stage.fitting" / "fitted_on.json").unlink()  # killed before it finished: the earlier one
    assert np.array_equal(drawn("earlier"), before)
    assert _main("fit-sampler", run, "--sampler", "two-stage", "--epochs", "1", "--hidden", "8") == 0
    assert sorted(p.name for p in folder.iterdir()) == ["two-stage"]
    capsys.readouterr()


def test_paths_too_long_or_not_utf8_are_one_line(tmp_path, capsys):
    """F13: a path over 4,095 bytes (each name ≤ 255) was an OSError traceback; F12: an --out not in UTF-8 was a
    UnicodeEncodeError traceback, and a run folder not in UTF-8 was called a corrupt safetensors file."""
    long = "/".join(["a" * 200] * 25)
    assert one_line(capsys, "train", "--dataset", "digits", "--out", long) == \
        "--out: the path is 5,024 bytes; file systems take at most 4,095: choose a shorter one"
    assert one_line(capsys, "evaluate", long) == "RUN: the path is 5,024 bytes; file systems take at most 4,095: " \
        "choose a shorter one"
    assert one_line(capsys, "train", "--dataset", f"{long}.npy", "--out", tmp_path / "R") == \
        "--dataset: the path is 5,028 bytes; file systems take at most 4,095: choose a shorter one"
    bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/b\xffd")
    assert one_line(capsys, "train", "--dataset", "digits", "--out", bad) == \
        f"--out {bad!r}: not valid UTF-8; a run's weights are written with safetensors, which opens only UTF-8 " \
        "paths: rename it"
    assert one_line(capsys, "evaluate", bad).startswith(f"RUN {bad!r}: not valid UTF-8")
    assert _main("train", "--dataset", "digits", *TINY, "--out", tmp_path / "R") == 0
    assert _main("sample", tmp_path / "R", "--n", "2", "--out", f"{bad}.png") == 0  # other files: any name
    assert os.path.exists(os.fsencode(str(tmp_path)) + b"/b\xffd.npy")


def test_data_larger_than_memory_advise_mmap(tmp_path, capsys, monkeypatch):
    """F10: a .npy larger than memory ended in "out of memory … a smaller --batch-size, --hidden …" (none helps), or
    without a limit in the kernel's kill; a file larger than the machine's memory is said, with --mmap."""
    import vaekit.data.files as data_files

    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32))
    monkeypatch.setattr(data_files, "physical_memory", lambda: 1000)
    assert one_line(capsys, "train", "--dataset", tmp_path / "d.npy", "--out", tmp_path / "R") == \
        f"{tmp_path / 'd.npy'}: its arrays' 1,600 bytes do not fit in this process's memory; a .npy is read as it is used " \
        "with --mmap"
    assert _main("train", "--dataset", tmp_path / "d.npy", "--mmap", "--likelihood", "gaussian", *TINY, "--out",
                 tmp_path / "R") == 0


def test_a_flag_no_command_takes_points_at_the_commands_help_and_odd_folders_and_versions(tmp_path, capsys):
    """F8: `train --epoch 1` said "see vaekit --help", which lists no flag of train; F9: --data-dir /dev/null was told
    to put mnist in /dev/null/mnist; F14: a config.json without a version was "written by vaekit 0"."""
    with pytest.raises(SystemExit, match="2"):
        main(["train", "--dataset", "digits", "--out", str(tmp_path / "E"), "--epoch", "1"])
    assert capsys.readouterr().err == "vaekit train: error: unrecognized arguments: --epoch 1 (did you mean " \
        "--epochs?); see vaekit train --help\n"
    assert one_line(capsys, "train", "--dataset", "mnist", "--data-dir", os.devnull, "--out", tmp_path / "M") == \
        f"--data-dir {os.devnull}: not a folder (a device)"
    (tmp_path / "R").mkdir()
    (tmp_path / "R" / "config.json").write_text("{}")
    assert one_line(capsys, "evaluate", tmp_path / "R") == \
        f"{tmp_path / 'R' / 'config.json'}: records no vaekit version: not a config.json vaekit wrote, or damaged"
    (tmp_path / "R" / "config.json").write_text('{"versions": {"vaekit": "abc"}}')
    assert one_line(capsys, "evaluate", tmp_path / "R") == \
        f"{tmp_path / 'R' / 'config.json'}: versions.vaekit 'abc' is not a version: not a config.json vaekit wrote, " \
        "or damaged"
