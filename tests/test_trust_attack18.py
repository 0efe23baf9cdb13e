"""What the eighteenth attack found (issue 27), each made for real: a damaged weight on a rare input, a spread that
underflows, a rank's own error under torchrun, a first checkpoint cut short, a data file changed since training, a
far-out validation row, a latents header that lies."""

import json
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from test_trust_attack5 import one_line

import vaekit
from vaekit.cli import main
from vaekit.errors import VaekitError
from vaekit.runs.checkpoint import load_run
from vaekit.runs.experiment import load_data
from vaekit.training.distributed import broken_collective

TINY = ("--latent-dim", "2", "--hidden", "8", "--seed", "1", "--batch-size", "32")
WEIGHTS = "model.safetensors is damaged or was trained into overflow"


def _train(capsys, *argv):
    assert main(["--quiet", "train", *map(str, argv)]) == 0
    capsys.readouterr()


def _damage(run, column, value=1e30):
    """The encoder's first weight on one input set to a finite `value`: every row with that input on overflows."""
    weights = load_file(run / "model.safetensors")
    first = next(k for k in weights if k.startswith("encoder") and k.endswith("weight"))
    weights[first][:, column] = value
    save_file(weights, str(run / "model.safetensors"), metadata={"epoch": "1", "step": "1"})


def test_a_damaged_weight_on_a_rare_input_is_blamed_on_the_weights(tmp_path, capsys):
    """Only the first 512 training rows were asked whether the weights fail on the run's own data: a pixel they never
    switch on was 'far outside the data the run was trained on' on the run's own digits. Every training and
    validation row is asked now, and the test split too where the data given are the run's own."""
    run = tmp_path / "r"
    _train(capsys, "--dataset", "digits", *TINY, "--epochs", 1, "--out", run)
    cfg = load_run(run)[0]
    train = load_data(cfg, run).eval_split("train")
    on = train > 0.5
    first_on = torch.where(on.any(0), on.float().argmax(0), torch.full((on.shape[1],), -1))
    pixel = int(first_on.argmax())  # the input whose first row that switches it on comes latest
    assert int(first_on[pixel]) >= 512 and int(on[:, pixel].sum()) >= 1
    _damage(run, pixel)
    said = one_line(capsys, "evaluate", run, "--dataset", "digits", "--split", "train", "--k", 2)
    assert WEIGHTS in said and "far outside" not in said, said


def test_the_runs_own_test_split_is_its_own_data(tmp_path, capsys):
    """An input that only the test split switches on, its weight damaged: on the run's own file the weights are
    blamed (every split of the data it was trained from is its own), on a byte-identical copy too (the same source
    was once told by its path alone: the recorded sha256 tells it too); on another file, the row."""
    rng = np.random.default_rng(0)
    train, test = (rng.random((300, 16)) > 0.5).astype(np.float32), (rng.random((60, 16)) > 0.5).astype(np.float32)
    train[:, 3] = 0
    np.savez(tmp_path / "own.npz", train=train, test=test)
    run = tmp_path / "r"
    _train(capsys, "--dataset", tmp_path / "own.npz", *TINY, "--epochs", 1, "--out", run)
    _damage(run, 3)
    shutil.copy(tmp_path / "own.npz", tmp_path / "copy.npz")
    for given in ("own.npz", "copy.npz"):
        said = one_line(capsys, "evaluate", run, "--dataset", tmp_path / given, "--split", "test", "--k", 2)
        assert WEIGHTS in said and "far outside" not in said, said
    test[:5, 0] = 1 - test[:5, 0]  # other bytes: another file, whose rows may be blamed
    np.savez(tmp_path / "other.npz", train=train, test=test)
    said = one_line(capsys, "evaluate", run, "--dataset", tmp_path / "other.npz", "--split", "test", "--k", 2)
    assert said.startswith(f"{tmp_path / 'other.npz'}: example ") and "far outside" in said


def test_score_blames_the_weights_where_the_rows_it_was_trained_on_fail(tmp_path, capsys):
    """score asked only the validation split, which held no row of a rare level: the run's own file was scored inf
    row by row with exit status 0."""
    rng = np.random.default_rng(1)
    lines = ["x,y,c"] + [f"{rng.normal():.3f},{abs(rng.normal()) + 0.5:.3f},{'z' if i in (17, 101, 188, 230) else 'ab'[i % 2]}"
                         for i in range(250)]
    (tmp_path / "tz.csv").write_text("\n".join(lines) + "\n")
    run = tmp_path / "r"
    _train(capsys, "--dataset", tmp_path / "tz.csv", "--likelihood", "mixed", *TINY, "--epochs", 2, "--out", run)
    levels = next(c for c in load_run(run)[0].model.columns.columns if c.name == "c").levels
    _damage(run, 2 + levels.index("z"))  # the inputs: x, y, then c's one-hot
    said = one_line(capsys, "score", run, "--data", tmp_path / "tz.csv", "--out", tmp_path / "s.csv")
    assert said.startswith(f"{tmp_path / 'tz.csv'}: line ") and WEIGHTS in said
    assert not (tmp_path / "s.csv").exists()


def test_score_says_the_runs_data_file_changed_rather_than_blame_the_weights(tmp_path, capsys):
    rng = np.random.default_rng(2)
    lines = ["x,c"] + [f"{rng.normal():.3f},{'ab'[i % 2]}" for i in range(200)]
    mine = tmp_path / "mine.csv"
    mine.write_text("\n".join(lines) + "\n")
    run = tmp_path / "r"
    _train(capsys, "--dataset", mine, "--likelihood", "mixed", *TINY, "--epochs", 2, "--out", run)
    mine.write_text("\n".join([lines[0], *(line.replace(line.split(",")[0], "1e30", 1) for line in lines[1:])]) + "\n")
    said = one_line(capsys, "score", run, "--data", mine, "--out", tmp_path / "s.csv")
    assert said == (f"{mine}, the run's data, changed since it was trained (its size is not the "
                    f"{json.loads((run / 'config.json').read_text())['data']['size']:,} bytes config.json "
                    "records); score's threshold comes from its validation split: restore that file")
    assert "damaged" not in said
    mine.write_text("\n".join([*lines, "0.5,a"]) + "\n")  # one row more, nothing far out: the threshold would move
    assert one_line(capsys, "score", run, "--data", mine, "--out", tmp_path / "s.csv") == said


def test_a_spread_that_underflows_to_zero_is_refused_by_encode(tmp_path, capsys):
    """encode refused a standard deviation that is not finite but wrote one of exactly 0 (a scale of 5e-28, whose
    variance underflows float32) for a row evaluate refuses. A log-variance bias of -125 gives every row such a
    spread: encode on the run's own data refuses it, naming the weights."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "g.npy", rng.normal(size=(300, 4)).astype(np.float32))
    run = tmp_path / "r"
    _train(capsys, "--dataset", tmp_path / "g.npy", "--likelihood", "gaussian", *TINY, "--epochs", 1, "--out", run)
    weights = load_file(run / "model.safetensors")
    weights["encoder.net.2.bias"][3] = -125.0  # the second latent's log-variance: σ ≈ e^-62.5, σ² below float32's range
    save_file(weights, str(run / "model.safetensors"), metadata={"epoch": "1", "step": "1"})
    q = load_run(run)[1].encode(torch.tensor(np.load(tmp_path / "g.npy")[:5]), distribution=True)
    assert bool((q.base_dist.scale[:, 1] > 0).all()) and bool((q.stddev[:, 1] == 0).all())
    said = one_line(capsys, "encode", run, "--out", tmp_path / "e.npz")
    assert "of the test split (5 in all)" not in said and "the standard deviation is 0" in said and WEIGHTS in said
    assert not (tmp_path / "e.npz").exists()


def test_only_a_broken_collective_is_called_lost_contact():
    """A rank's own RuntimeError (a shape, a plugin's bug) was relabelled as a lost peer on the rank that failed."""
    assert not broken_collective(RuntimeError("inconsistent tensor size, expected tensor [3] and src [4]"))
    assert not broken_collective(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert broken_collective(RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by "
                                          "peer [127.0.0.1]:41709"))
    assert broken_collective(torch.distributed.DistBackendError("NCCL communicator was aborted"))


def test_a_ranks_own_error_under_torchrun_is_its_own(tmp_path):
    """The rank whose prior raised said it had lost contact with another rank; its own error is now what it says."""
    (tmp_path / "bug.py").write_text(
        "import os, torch, vaekit\nfrom torch import nn\nfrom torch.distributions import Independent, Normal\n"
        "class Buggy(nn.Module):\n    def __init__(self, k):\n        super().__init__()\n"
        "        self.register_buffer('loc', torch.zeros(k))\n        self.n = 0\n"
        "    def forward(self):\n        self.n += 1\n        if os.environ.get('RANK') == '1' and self.n > 3:\n"
        "            torch.zeros(3) @ torch.zeros(4)\n        return Independent(Normal(self.loc, torch.ones_like(self.loc)), 1)\n"
        "@vaekit.register_prior('buggy')\ndef buggy(latent_dim):\n    \"\"\"a prior with a bug on rank 1\"\"\"\n"
        "    return Buggy(latent_dim)\n")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                           "vaekit", "--quiet", "train", "--plugin", str(tmp_path / "bug.py"), "--prior", "buggy",
                           "--dataset", "digits", *TINY, "--epochs", "1", "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert "inconsistent tensor size" in proc.stderr  # rank 1's own error, as itself
    assert "rank 1: lost contact" not in proc.stderr, proc.stderr[-3000:]


def test_a_first_checkpoint_cut_short_starts_again_and_a_later_one_keeps_its_weights(tmp_path, capsys):
    """A kill (or a full disk) between the first checkpoint's weights and its train_state.pt left a run --resume
    refused, blaming vaekit.save and asking to delete model.safetensors. It starts again from step 0 and ends as an
    uninterrupted run does; a later epoch's weights without their state are kept and the advice moves them aside."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    flags = ("--dataset", "digits", *TINY)
    _train(capsys, *flags, "--epochs", 2, "--out", whole)
    _train(capsys, *flags, "--epochs", 1, "--out", cut)
    (cut / "train_state.pt").unlink()  # the first checkpoint's weights and metrics, its state never written
    _train(capsys, *flags, "--epochs", 2, "--out", cut, "--resume")
    for name in ("model.safetensors", "train_state.pt", "config.json", "metrics.jsonl"):
        assert (cut / name).read_bytes() == (whole / name).read_bytes(), name
    (cut / "train_state.pt").unlink()  # epoch 2's weights: restarting would write over them
    before = (cut / "model.safetensors").read_bytes()
    said = one_line(capsys, "train", "--out", cut, "--epochs", 3, "--resume")
    assert said == (f"{cut}: holds weights but no train_state.pt to continue training from (its epoch 2's checkpoint "
                    "was cut short, or the file removed); move model.safetensors elsewhere and pass --resume to train "
                    "it again from step 0, or train into another --out")
    assert (cut / "model.safetensors").read_bytes() == before


def test_a_far_out_validation_row_is_named_in_training_not_the_weights_that_do_not_exist(tmp_path, capsys):
    """One value of 1e4 in a validation row ended training at epoch 1 with 'the run's model.safetensors is damaged
    … retrain' (there was none, and retraining failed the same way)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    np.save(tmp_path / "g.npy", x)
    run = tmp_path / "r"
    _train(capsys, "--dataset", tmp_path / "g.npy", "--likelihood", "gaussian", *TINY, "--epochs", 1, "--out", run)
    cfg = load_run(run)[0]
    val = load_data(cfg, run).eval_split("val")
    row = int(np.flatnonzero((x[:, None, :] == val.numpy()[None]).all(-1).any(1))[0])  # a file row in the split
    x[row, 2] = 1e4
    np.save(tmp_path / "far.npy", x)
    said = one_line(capsys, "train", "--dataset", tmp_path / "far.npy", "--likelihood", "gaussian", *TINY, "--epochs",
                    1, "--out", tmp_path / "f")
    assert said.startswith(f"{tmp_path / 'far.npy'}: example ") and "of the validation split (its value 10000 at " \
        "position 2)" in said and "not on the other rows nor on the rows the run was trained on" in said
    with pytest.raises(VaekitError, match="overflow on the data in training .* training diverged"):
        vaekit.fit(vaekit.VAE(data_dim=4, latent_dim=2, hidden=[4], likelihood="gaussian"),
                   torch.randn(50, 4) * 1e30, epochs=1, progress=False, skip_nonfinite=5)


def _npy(n, version=1):
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, 2), }}".encode()
    header += b" " * (118 - len(header)) + b"\n"
    length = struct.pack("<H", len(header)) if version == 1 else struct.pack("<I", len(header))
    return b"\x93NUMPY" + bytes([version, 0]) + length + header + b"\0" * 64


def test_a_latents_header_that_claims_more_than_the_file_holds_is_refused(tmp_path, capsys):
    """A 193-byte .npy whose header claims 10⁹ × 2 floats made numpy ask for 7.45 GiB ('out of memory … ask for
    less', which decode has no flag for)."""
    run = tmp_path / "r"
    _train(capsys, "--dataset", "digits", *TINY, "--epochs", 1, "--out", run)
    (tmp_path / "z.npy").write_bytes(_npy(10**9))
    import zipfile

    with zipfile.ZipFile(tmp_path / "z.npz", "w") as z:
        z.writestr("mean.npy", _npy(10**12))
    said = one_line(capsys, "decode", run, "--latents", tmp_path / "z.npy", "--out", tmp_path / "d.npy")
    assert said == (f"{tmp_path / 'z.npy'}: its header claims an array of shape (1000000000, 2) (8,000,000,000 bytes), "
                    "but the file holds 64 bytes after it; the file is cut short or damaged")
    said = one_line(capsys, "decode", run, "--latents", tmp_path / "z.npz", "--out", tmp_path / "d.npy")
    assert said.startswith(f"{tmp_path / 'z.npz'} [mean]: its header claims an array of shape (1000000000000, 2)")
    for version in (2, 3):  # 3.0: a UTF-8 header, which numpy reads (and allocates for) but has no public reader of
        (tmp_path / "v.npy").write_bytes(_npy(10**9, version))
        said = one_line(capsys, "decode", run, "--latents", tmp_path / "v.npy", "--out", tmp_path / "d.npy")
        assert said.startswith(f"{tmp_path / 'v.npy'}: its header claims an array of shape (1000000000, 2)"), said


def test_score_bounds_its_importance_samples_as_evaluate_does(tmp_path, capsys):
    (tmp_path / "t.csv").write_text("x,c\n" + "\n".join(f"{i / 100:.2f},{'ab'[i % 2]}" for i in range(100)) + "\n")
    run = tmp_path / "r"
    _train(capsys, "--dataset", tmp_path / "t.csv", "--likelihood", "mixed", *TINY, "--epochs", 1, "--out", run)
    said = one_line(capsys, "score", run, "--data", tmp_path / "t.csv", "--out", tmp_path / "s.csv", "--k", 100000000)
    assert said == "--k 100000000 is out of range: importance samples per example from 2 to 1,000,000 (the Monte Carlo error needs two weights)"


# ---- the nineteenth attack, on the fixes above ----------------------------------------------------------------------

def test_a_start_again_from_step_0_checks_the_data_and_the_init_from_source(tmp_path, capsys):
    """A first epoch's weights without their state started again from step 0 without the data check a resume makes:
    a changed data file was trained on silently (its new sha256 recorded). And with --init-from the start again
    would begin from the source's weights as they are now, not as they were: that run is refused."""
    rng = np.random.default_rng(0)
    np.save(tmp_path / "g.npy", rng.normal(size=(300, 4)).astype(np.float32))
    run = tmp_path / "r"
    _train(capsys, "--dataset", tmp_path / "g.npy", "--likelihood", "gaussian", *TINY, "--epochs", 1, "--out", run)
    (run / "train_state.pt").unlink()
    before = (run / "model.safetensors").read_bytes()
    np.save(tmp_path / "g.npy", rng.normal(size=(300, 4)).astype(np.float32))
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    assert said.startswith(f"{tmp_path / 'g.npy'}: not the data this run was trained on (its sha256 differs")
    assert (run / "model.safetensors").read_bytes() == before
    source, child = tmp_path / "a", tmp_path / "b"
    _train(capsys, "--dataset", "digits", *TINY, "--epochs", 1, "--out", source)
    _train(capsys, "--init-from", source, "--dataset", "digits", "--epochs", 1, "--out", child)
    (child / "train_state.pt").unlink()
    said = one_line(capsys, "train", "--out", child, "--epochs", 2, "--resume")
    assert said.startswith(f"{child}: holds weights but no train_state.pt to continue training from")


def test_the_runs_own_rows_are_asked_a_chunk_at_a_time_and_no_further_than_the_first_that_fails(tmp_path, capsys):
    """The test of the run's own rows made a float copy of all of them and scored every row of a failing batch alone
    (27 minutes for a 2,000,000-row run with damaged weights): it reads chunks and stops at the first that fails."""
    from vaekit.evaluation.overflow import any_overflowing, split_chunks

    run = tmp_path / "r"
    _train(capsys, "--dataset", "digits", *TINY, "--epochs", 1, "--out", run)
    cfg, model = load_run(run)
    data = load_data(cfg, run)
    chunks = list(split_chunks(data, ["train", "val"], False, size=256))
    assert [len(c[0]) for c in chunks] == [256] * 5 + [1300 - 1280, 200]
    whole = torch.cat([c[0] for c in chunks[:6]])
    assert torch.equal(whole, data.eval_split("train")) or data.binarize == "dynamic"
    assert not any_overflowing(model, iter(chunks))
    _damage(run, 30)
    model = load_run(run)[1]
    asked = []

    def counted():
        for c in chunks:
            asked.append(len(c[0]))
            yield c
    failing = next(i for i, c in enumerate(chunks) if bool((c[0][:, 30] > 0.5).any()))
    assert any_overflowing(model, counted()) and len(asked) == failing + 1


def test_a_run_whose_data_changed_says_so_before_blaming_its_weights(tmp_path, capsys):
    """evaluate, encode, plot and report on a run whose data file changed since training (now overflowing) said the
    weights were damaged; the hedged line sent the user to `vaekit evaluate RUN`, which said the same."""
    rng = np.random.default_rng(2)
    mine = tmp_path / "mine.npy"
    x = rng.normal(size=(300, 4)).astype(np.float32)
    np.save(mine, x)
    run = tmp_path / "r"
    _train(capsys, "--dataset", mine, "--likelihood", "gaussian", *TINY, "--epochs", 1, "--out", run)
    x[:, 0] = 1e30
    np.save(mine, x)
    for command in (["evaluate", run, "--k", 2], ["encode", run, "--out", tmp_path / "e.npz"],
                    ["evaluate", run, "--dataset", mine, "--k", 2]):
        said = one_line(capsys, *command)
        assert f"{mine}, the run's data, changed since it was trained (its sha256 differs" in said, said
        assert "damaged" not in said
