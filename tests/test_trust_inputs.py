"""Inputs that ended in a traceback (issue 27's list), each now one line with exit status 2: the case made for
real (a crafted config.json, a 300-byte name, a seed beyond torch's range), the message checked."""

import json
import shutil

import numpy as np
import pytest
import torch

from vaekit.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("inputs") / "run"
    assert main(["--quiet", "train", "--out", str(out), "--epochs", "1", "--latent-dim", "2", "--hidden", "16"]) == 0
    return out


def one_line(capsys, *argv):
    code = main(["--quiet", *map(str, argv)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("vaekit: error: "), (code, err)
    return err[0]


@pytest.mark.parametrize("command", [["evaluate"], ["sample"], ["encode", "--out", "{tmp}/z.npy"]])
def test_a_seed_beyond_torch_range(trained, tmp_path, capsys, command):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in command]
    assert "--seed must be a whole number from 0 to 9223372036854775807" in one_line(
        capsys, argv[0], trained, *argv[1:], "--seed", str(2**64))


def test_an_out_name_longer_than_a_file_system_takes(tmp_path, capsys):
    line = one_line(capsys, "train", "--out", tmp_path / ("r" * 300), "--epochs", "1")
    assert "is 300 bytes; file systems take at most 255 a name" in line


def edited(trained, tmp_path, fn):
    run = shutil.copytree(trained, tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    fn(cfg)
    (run / "config.json").write_text(json.dumps(cfg))
    return run


@pytest.mark.parametrize("fn, message", [
    (lambda c: c.update(versions=["0.4.0"]), "versions must be an object of version strings"),
    (lambda c: c["model"].update(plugins=5), "[model] plugins must be a list of plugin names, got 5"),
    (lambda c: c["model"].update(plugins=None), "[model] plugins must be a list of plugin names, got None"),
    (lambda c: c["model"].update(condition_classes=-1), "condition_classes must be >= 0 and <= 1000, got -1"),
    (lambda c: c["model"].update(data_shape=[-1, 8, 8]), "data_shape must be > 0, got -1"),
])
def test_a_crafted_config_json(trained, tmp_path, capsys, fn, message):
    assert message in one_line(capsys, "evaluate", edited(trained, tmp_path, fn), "--k", "2")


def test_plot_into_a_path_that_is_a_file(trained, tmp_path, capsys):
    (tmp_path / "pics").write_text("not a folder")
    assert "is a file, not a folder" in one_line(capsys, "plot", trained, "--out", tmp_path / "pics")


def test_a_flow_of_a_million_steps(tmp_path, capsys):
    line = one_line(capsys, "train", "--out", tmp_path / "r", "--posterior", "iaf", "--flow-steps", "1000000")
    assert "--flow-steps must be > 0 and <= 256, got 1000000" in line


def test_a_nan_in_a_csv_is_named_by_its_line(tmp_path, capsys):
    (tmp_path / "n.csv").write_text("a,b\n1,2\n\n3,4\n5,nan\n6,7\n")
    line = one_line(capsys, "train", "--dataset", tmp_path / "n.csv", "--likelihood", "gaussian", "--out", tmp_path / "r")
    assert line.endswith("n.csv: line 5 holds NaN or Inf; a table with missing cells takes --likelihood mixed")


def test_resume_to_fewer_epochs_than_trained_is_refused_and_config_kept(trained, tmp_path, capsys):
    run = shutil.copytree(trained, tmp_path / "run")
    before = (run / "config.json").read_bytes()
    main(["--quiet", "train", "--out", str(run), "--resume", "--epochs", "2", "--latent-dim", "2", "--hidden", "16"])
    capsys.readouterr()
    line = one_line(capsys, "train", "--out", run, "--resume", "--epochs", "1", "--latent-dim", "2", "--hidden", "16")
    assert "--epochs 1 is fewer than the 2 this run has trained" in line
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2 and before != b""


@pytest.mark.parametrize("name, content, message", [
    ("short.csv", "z1_mean,z2_mean\n0.1,0.2\n0.3\n", "short.csv: line 3 has 1 cells, but line 1 has 2; give every row as many"),
    ("zip.npz", "this is not a zip archive", "cannot read latents ("),
    ("empty.npy", "", "cannot read latents ("),
    ("empty.csv", "", "empty.csv: no latents (0 rows); decode needs at least one"),
    ("header.csv", "z1_mean,z2_mean,z1_std,z2_std\n", "header.csv: no latents (0 rows); decode needs at least one"),
])
def test_latents_files_that_are_not_what_they_claim(trained, tmp_path, capsys, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    assert message in one_line(capsys, "decode", trained, "--latents", path, "--out", tmp_path / "x.npy")


def test_labels_that_do_not_match_the_latents(tmp_path, capsys):
    import numpy as np

    run = tmp_path / "cvae"
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
                 "--condition", "label"]) == 0
    np.savez(tmp_path / "z.npz", mean=np.zeros((3, 2), np.float32), labels=np.arange(5))
    assert "3 latents beside 5 labels" in one_line(capsys, "decode", run, "--latents", tmp_path / "z.npz",
                                                   "--out", tmp_path / "x.npy")
    (tmp_path / "z.csv").write_text("z1_mean,z2_mean,label\n0.1,0.2,1\n0.3,0.4,\n")
    assert "cannot read labels (" in one_line(capsys, "decode", run, "--latents", tmp_path / "z.csv",
                                              "--out", tmp_path / "x.npy")


def test_a_setting_of_the_runs_own_objective_on_resume(tmp_path, capsys):
    """--gamma on a FactorVAE run's --resume was refused as 'not a setting of elbo': the flags now stand over the
    run's saved config, not the defaults; a non-resumable setting is still refused, naming itself and the run's value
    (not the whole objective)."""
    run = tmp_path / "fvae"
    flags = ["--latent-dim", "2", "--hidden", "16", "--objective", "factorvae", "--discriminator-hidden", "8"]
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "1", *flags]) == 0
    line = one_line(capsys, "train", "--out", run, "--resume", "--epochs", "2", "--gamma", "7")
    assert "[train.objective] gamma = 7.0 differs from the run's " in line and "cannot change on --resume" in line
    assert main(["--quiet", "train", "--out", str(run), "--resume", "--epochs", "2"]) == 0


def test_finite_weights_that_make_an_invalid_distribution(tmp_path, capsys):
    """A MoG prior's log-scales of −200 are finite, but e^−200 is 0 in float32: torch.distributions refuses the
    scale; that is one line naming the damaged weights, not a traceback."""
    from safetensors.torch import load_file, save_file

    run = tmp_path / "mog"
    assert main(["--quiet", "train", "--out", str(run), "--epochs", "1", "--latent-dim", "2", "--hidden", "16",
                 "--prior", "mog", "--prior-components", "3"]) == 0
    weights = load_file(run / "model.safetensors")
    (key,) = [k for k in weights if k.endswith("log_scales")]
    weights[key] = torch.full_like(weights[key], -200.0)
    save_file(weights, run / "model.safetensors")
    line = one_line(capsys, "evaluate", run, "--k", "2")
    assert "the model's weights make an invalid distribution (Expected parameter scale" in line


@pytest.mark.parametrize("name, z, message", [
    ("empty.npy", np.zeros((0, 2), np.float32), "empty.npy: no latents (0 rows); decode needs at least one"),
    ("empty4.npy", np.zeros((0, 4), np.float32), "empty4.npy: no latents (0 rows); decode needs at least one"),
    ("complex.npy", np.full((3, 2), 1 + 5j, np.complex64),
     "complex.npy: latents must be real numbers (integer or floating point), got dtype complex64"),
    ("huge.npy", np.array([[0.0, 0.0], [0.0, -1e300]]),
     "huge.npy: row 2, z2 = -1e+300 is beyond float32's range (±3.4e+38), what the model computes in"),
])
@pytest.mark.parametrize("out", ["x.png", "x.npy"])
def test_latents_decode_cannot_make_sense_of(trained, tmp_path, capsys, name, z, message, out):
    """0 rows: a ZeroDivisionError in the grid (.png) or an empty array written (.npy); complex: the imaginary part
    dropped; 1e300 in float64: ±inf in float32, blamed on model.safetensors."""
    np.save(tmp_path / name, z)
    line = one_line(capsys, "decode", trained, "--latents", tmp_path / name, "--out", tmp_path / out)
    assert line == f"vaekit: error: {tmp_path / name}: {message.split(': ', 1)[1]}"
    assert not (tmp_path / out).exists()


def test_latents_at_the_edge_of_float32_still_decode(trained, tmp_path, capsys):
    np.save(tmp_path / "edge.npy", np.array([[3e38, -3e38], [0.5, 1]], np.float64))  # finite in float32
    assert main(["--quiet", "decode", str(trained), "--latents", str(tmp_path / "edge.npy"),
                 "--out", str(tmp_path / "x.npy")]) == 0
    x = np.load(tmp_path / "x.npy")
    assert x.shape == (2, 1, 8, 8) and np.isfinite(x).all()


def test_a_csv_latent_beyond_float32_is_named_not_read_as_inf(trained, tmp_path, capsys):
    (tmp_path / "z.csv").write_text("0.1,0.2\n1e300,0.3\n")
    line = one_line(capsys, "decode", trained, "--latents", tmp_path / "z.csv", "--out", tmp_path / "x.npy")
    assert line.endswith("z.csv: row 2, z1 = 1e+300 is beyond float32's range (±3.4e+38), what the model computes in")


@pytest.mark.parametrize("t, message", [
    ("1e300", ("--temperature 1e+300 is out of range (at most 1000: it multiplies p(z)'s standard deviations, and far "
               "beyond that the decoder overflows float32)")),
    ("inf", "--temperature inf is out of range (at most 1000"),
    ("nan", "--temperature must be a number > 0, got nan"),
])
def test_a_temperature_beyond_its_bound_names_the_flag_not_the_weights(trained, tmp_path, capsys, t, message):
    line = one_line(capsys, "sample", trained, "--temperature", t, "--out", tmp_path / "s.png")
    assert line.startswith(f"vaekit: error: {message}") and "model.safetensors" not in line
    assert main(["--quiet", "sample", str(trained), "--temperature", "1000", "--n", "4",
                 "--out", str(tmp_path / "s.npy")]) == 0
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()


def test_evaluate_of_one_example_is_refused_not_called_collapsed(trained, capsys):
    """Active units are a variance over the examples: over one it was 0, and a posterior-collapse warning followed."""
    line = one_line(capsys, "evaluate", trained, "--n", "1", "--k", "2")
    assert line == "vaekit: error: --n must be at least 2: active units are a variance over the examples, undefined " \
                   "for one; got 1"
    assert main(["--quiet", "evaluate", str(trained), "--n", "2", "--k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2
