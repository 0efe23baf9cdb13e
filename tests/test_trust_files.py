"""Files in a run directory that are not what they claim (issue 27): links, FIFOs and devices where vaekit
writes or reads, each made for real, each refused in one line with nothing written outside the run."""

import os
import shutil
import threading

import pytest

from vaekit.cli import main
from vaekit.files import append_line, read_capped

TRAIN = ["train", "--dataset", "digits", "--epochs", "1", "--latent-dim", "2", "--hidden", "16"]


def run(capsys, *argv):
    code = main(["--quiet", *map(str, argv)])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_a_lock_that_links_elsewhere_is_refused_and_its_target_kept(tmp_path, capsys):
    victim = tmp_path / "precious.txt"
    victim.write_text("do not truncate me\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".vaekit.lock").symlink_to(victim)
    code, err = run(capsys, *TRAIN, "--out", out)
    assert code == 2 and len(err) == 1 and "symbolic link" in err[0] and ".vaekit.lock" in err[0]
    assert victim.read_text() == "do not truncate me\n"
    (out / ".vaekit.lock").unlink()
    (out / ".vaekit.lock").symlink_to(tmp_path / "nowhere" / "made")  # dangling: nothing may be created there
    code, err = run(capsys, *TRAIN, "--out", out)
    assert code == 2 and not (tmp_path / "nowhere").exists()


def test_an_out_that_links_nowhere_is_named_as_such(tmp_path, capsys):
    (tmp_path / "out").symlink_to(tmp_path / "gone")  # it said "is a file, not a folder"
    code, err = run(capsys, *TRAIN, "--out", tmp_path / "out")
    assert code == 2 and err == [(f"vaekit: error: {tmp_path / 'out'}: is a symbolic link to {tmp_path / 'gone'}, which "
                                 "does not exist: make that folder, or choose another path")]
    assert not (tmp_path / "gone").exists()


def test_a_lock_that_is_a_fifo_is_refused_without_blocking(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / ".vaekit.lock")
    code, err = run(capsys, *TRAIN, "--out", out)
    want = f"vaekit: error: {out / '.vaekit.lock'}: not a regular file (a FIFO); remove it"
    assert code == 2 and err == [want]


def test_metrics_are_never_appended_through_a_link(tmp_path):
    elsewhere = tmp_path / "elsewhere.jsonl"
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").symlink_to(elsewhere)  # dangling
    with pytest.raises(Exception, match="symbolic link"):
        append_line(run_dir / "metrics.jsonl", '{"epoch": 1}')
    assert not elsewhere.exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert main(["--quiet", *TRAIN, "--out", str(out)]) == 0
    return out


def copy_of(trained, tmp_path):
    import shutil

    return shutil.copytree(trained, tmp_path / "run")


def test_metrics_and_config_that_are_devices_or_fifos_are_refused_at_once(trained, tmp_path, capsys):
    run_dir = copy_of(trained, tmp_path)
    (run_dir / "metrics.jsonl").unlink()
    (run_dir / "metrics.jsonl").symlink_to("/dev/zero")  # would allocate until the process died
    code, err = run(capsys, "plot", run_dir, "--out", tmp_path / "pics")
    assert code == 2 and len(err) == 1 and "metrics.jsonl: not a regular file" in err[0]
    (run_dir / "config.json").unlink()
    os.mkfifo(run_dir / "config.json")  # would block evaluate forever
    done = []
    t = threading.Thread(target=lambda: done.append(run(capsys, "evaluate", run_dir, "--k", "2")), daemon=True)
    t.start()
    t.join(60)
    assert done and done[0][0] == 2 and "config.json: not a regular file" in done[0][1][0]


def test_a_file_larger_than_its_cap_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "config.json"
    big.write_bytes(b" " * 2048)
    with pytest.raises(Exception, match="2,048 bytes, more than the 1,024"):
        read_capped(big, 1024)
    assert read_capped(big, 4096) == b" " * 2048


def test_a_dataset_that_is_a_fifo_is_refused(tmp_path, capsys):
    os.mkfifo(tmp_path / "data.npy")
    code, err = run(capsys, *TRAIN[:1], "--dataset", tmp_path / "data.npy", "--out", tmp_path / "run", "--epochs", "1")
    assert code == 2 and "data.npy: not a regular file" in err[0]


def test_out_of_memory_without_a_message_is_one_line(monkeypatch, capsys):
    from vaekit.cli import arguments

    def boom(args):
        raise MemoryError

    monkeypatch.setattr(arguments, "cmd_evaluate", boom)
    code, err = run(capsys, "evaluate", "anything")
    want = "vaekit: error: out of memory (MemoryError); ask for less: a smaller --n, --k or --elbo-samples"  # its flags
    assert code == 2 and err == [want]


def test_tensorboard_is_never_written_through_a_link(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").symlink_to(elsewhere)
    code, err = run(capsys, *TRAIN, "--out", out, "--tensorboard")
    assert code == 2 and "tensorboard: is a symbolic link" in err[0] and list(elsewhere.iterdir()) == []


@pytest.fixture
def full_disk(tmp_path):
    """A real file system with no space left: a 64 KiB tmpfs, filled (skipped where mounting is not allowed)."""
    import subprocess

    where = tmp_path / "full"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(where)], capture_output=True,
                      check=False).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with open(where / "fill", "wb") as f:
            try:
                f.write(bytes(1 << 20))
            except OSError:
                pass
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def test_a_full_disk_at_the_lock_or_tensorboard_is_one_line(full_disk, capsys):
    for extra, what in (([], ".vaekit.lock: cannot write (the disk is full"),
                        (["--tensorboard"], "tensorboard/.vaekit-probe: cannot write (the disk is full")):
        out = full_disk / f"run{len(extra)}"
        assert main(["--quiet", "train", "--epochs", "1", "--hidden", "8", *extra, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert what in err and err.count("\n") == 1, err
        assert not (out / "model.safetensors").exists()


def test_a_fifo_as_the_standardization_or_the_trainer_state_is_one_line_not_a_hang(tmp_path):
    import subprocess
    import sys

    run = tmp_path / "std"
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "1", "--hidden", "8", "--latent-dim", "2",
                 "--likelihood", "gaussian", "--standardize"]) == 0
    for name, verb in (("standardization.safetensors", ["sample", "--n", "4"]),
                       ("train_state.pt", ["train", "--resume", "--epochs", "2", "--out"])):
        case = tmp_path / name
        shutil.copytree(run, case)
        (case / name).unlink()
        os.mkfifo(case / name)  # a reader would wait for a writer for ever
        argv = [verb[0], *verb[1:], str(case)] if verb[0] == "train" else [verb[0], str(case), *verb[1:]]
        proc = subprocess.run([sys.executable, "-m", "vaekit", *argv], capture_output=True, text=True, timeout=120,
                              check=False)
        assert proc.returncode == 2 and f"{name}: not a regular file" in proc.stderr, proc.stderr
        assert [line for line in proc.stderr.splitlines() if "error" in line or "Traceback" in line] == \
            [proc.stderr.splitlines()[-1]]  # the data's own note may come first; then one line, no traceback


def test_a_run_without_validation_encodes_all_and_scores_against_its_training_rows(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i % 7},{'xy'[i % 2]}\n" for i in range(40)))
    assert main(["--quiet", "train", "--dataset", str(table), "--likelihood", "mixed", "--epochs", "1", "--hidden", "8",
                 "--latent-dim", "2", "--val-size", "0", "--out", str(tmp_path / "run")]) == 0
    assert main(["--quiet", "encode", str(tmp_path / "run"), "--split", "all", "--out", str(tmp_path / "z.npz")]) == 0
    assert "(train, test)" in capsys.readouterr().out
    assert main(["--quiet", "score", str(tmp_path / "run"), "--data", str(table), "--out", str(tmp_path / "s.csv"),
                 "--k", "5"]) == 0
    assert "quantile of the training split (the run has no validation split)" in capsys.readouterr().out


def within(seconds, fn):
    """fn() in a thread, its result, or a failure (not a hung test) when it blocks longer than `seconds`."""
    done = []
    t = threading.Thread(target=lambda: done.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert done, f"still blocked after {seconds} s"
    return done[0]


def test_decode_latents_that_are_a_fifo_a_device_or_a_sparse_giant_are_one_line(trained, tmp_path, capsys):
    """`decode --latents` waited for ever on a FIFO and read /dev/zero or a 20 GB sparse CSV until memory ran out."""
    os.mkfifo(tmp_path / "z.npy")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    with open(tmp_path / "sparse.csv", "wb") as f:
        f.truncate(20 << 30)  # claims 20 GB, holds none
    for name, why in (("z.npy", "not a regular file (a FIFO)"),
                      ("zero.csv", "not a regular file (a device)"),
                      ("sparse.csv", "21,474,836,480 bytes, more than the 1,073,741,824 vaekit reads of it")):
        code, err = within(60, lambda name=name: run(capsys, "decode", trained, "--latents", tmp_path / name,
                                                     "--out", tmp_path / "x.npy"))
        assert code == 2 and err == [f"vaekit: error: {tmp_path / name}: {why}"]
    assert not (tmp_path / "x.npy").exists()


def test_impute_and_score_data_that_is_a_fifo_or_a_device_is_one_line(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("a,b\n" + "".join(f"{i % 7},{'xy'[i % 2]}\n" for i in range(40)))
    assert main(["--quiet", "train", "--dataset", str(table), "--likelihood", "mixed", "--epochs", "1", "--hidden", "8",
                 "--latent-dim", "2", "--out", str(tmp_path / "run")]) == 0
    os.mkfifo(tmp_path / "fifo.csv")
    (tmp_path / "zero.csv").symlink_to("/dev/zero")
    for verb in ("impute", "score"):
        for name in ("fifo.csv", "zero.csv"):
            code, err = within(60, lambda verb=verb, name=name: run(
                capsys, verb, tmp_path / "run", "--data", tmp_path / name, "--out", tmp_path / "o.csv"))
            want = f"vaekit: error: {tmp_path / name}: not a regular file ({'a FIFO' if 'fifo' in name else 'a device'})"
            assert code == 2 and err == [want], (verb, name)
    assert not (tmp_path / "o.csv").exists()
