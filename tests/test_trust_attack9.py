"""The ninth held-out attack's faults (issue 27), each made for real: vaekit.fit's resume keywords at their default
values, a run that lost config.json or its standardization, a nested config record, `vaekit.load` of a
standardized run, score's header beside columns named like its own, header names that hide text, wrong types."""

import csv
import json
import logging
import re

import numpy as np
import pytest
import torch
from test_trust_attack5 import one_line

import vaekit
from vaekit.cli import main
from vaekit.runs.checkpoint import load_state

TRAIN = ("train", "--dataset", "digits", "--latent-dim", 2, "--hidden", 16, "--seed", 3)


def digits_vae():
    torch.manual_seed(0)
    return vaekit.VAE(data_dim=64, latent_dim=2, hidden=(16,), likelihood="bernoulli")


def test_fit_resume_takes_the_keywords_passed_at_their_default_values(tmp_path):
    """`epochs=50, lr=1e-3, grad_clip=0.0` on a resume were read as "not given" (equal to the defaults), so the run's
    epochs 1, lr 0.01 and clip 5 stood and nothing was trained; the keywords passed are what the call gives."""
    x = (vaekit.load_dataset("digits").eval_split("test")[:300] > 0.5).float()
    vaekit.fit(digits_vae(), x, out=tmp_path / "r", epochs=1, lr=0.01, grad_clip=5.0, seed=3, progress=False)
    vaekit.fit(digits_vae(), x, out=tmp_path / "r", epochs=2, lr=1e-3, grad_clip=0.0, seed=3, resume=True,
               progress=False)
    train = json.loads((tmp_path / "r" / "config.json").read_text())["train"]
    assert (train["epochs"], train["lr"], train["grad_clip"]) == (2, 1e-3, 0.0)
    assert load_state(tmp_path / "r")["epoch"] == 2
    for kwargs, said in [({"resume": "no", "out": tmp_path / "r"}, "got resume='no'"),
                         ({"resume": True}, "got resume=True and no out"),
                         ({"device": 5}, "device must be a name such as 'cpu' or 'cuda', got int")]:
        with pytest.raises(vaekit.VaekitError, match=said):
            vaekit.fit(digits_vae(), x, epochs=1, progress=False, **kwargs)


def test_a_run_that_lost_config_json_is_not_overwritten_and_resumes_from_its_state(tmp_path, capsys, caplog):
    """`--resume` said "start it without --resume", and a plain train then replaced the trained checkpoint with a
    fresh run, exit 0. A fresh train is refused now; `--resume` writes config.json again from train_state.pt's
    record and ends with the bytes of the uninterrupted run."""
    straight, run = tmp_path / "straight", tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "3", "--out", str(straight)]) == 0
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "2", "--out", str(run)]) == 0
    (run / "config.json").unlink()
    state = (run / "train_state.pt").read_bytes()
    said = one_line(capsys, *TRAIN, "--epochs", 1, "--seed", 9, "--out", run)
    assert said == (f"{run}: holds train_state.pt and model.safetensors of a run whose config.json is missing; pass "
                    "--resume to continue it (its config.json is written again from train_state.pt), or choose "
                    "another --out")
    assert (run / "train_state.pt").read_bytes() == state
    with caplog.at_level(logging.WARNING):
        assert main(["--quiet", "train", "--out", str(run), "--epochs", "3", "--resume"]) == 0
    assert f"{run / 'config.json'}: missing; written again from the config train_state.pt records" in caplog.text
    for name in ("model.safetensors", "train_state.pt", "metrics.jsonl"):
        assert (run / name).read_bytes() == (straight / name).read_bytes(), name
    assert json.loads((run / "config.json").read_text())["train"] == json.loads(
        (straight / "config.json").read_text())["train"]


def test_a_config_record_nested_too_deeply_is_one_line(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    state = load_state(run)
    state["config"] = "[" * 3000 + "]" * 3000
    torch.save(state, run / "train_state.pt")
    said = one_line(capsys, "train", "--out", run, "--epochs", 2, "--resume")
    assert said.startswith(f"{run / 'train_state.pt'}: config is not valid JSON (nested too deeply); the file is damaged")


def test_a_run_that_lost_its_standardization_computes_it_again_on_resume(tmp_path, capsys, caplog):
    """Every command said the statistics were gone, with no way out: they are the training split's mean and sd,
    computed again by a resume with the same bytes; `vaekit.load` says the model works in standardized units."""
    x = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32) * [1, 10, 100, 0.1] + [5, -3, -2, 1]
    np.save(tmp_path / "g.npy", x.astype(np.float32))
    run = tmp_path / "r"
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "g.npy"), "--likelihood", "gaussian", "--standardize",
                 "--epochs", "1", "--latent-dim", "2", "--hidden", "16", "--out", str(run)]) == 0
    saved = (run / "standardization.safetensors").read_bytes()
    (run / "standardization.safetensors").unlink()
    said = one_line(capsys, "sample", run, "--n", 4, "--out", tmp_path / "s.npy")
    assert said == (f"{run / 'standardization.safetensors'}: missing; `vaekit train --out {run} --resume` computes it "
                    "again from the data")
    with caplog.at_level(logging.WARNING):
        assert main(["--quiet", "train", "--out", str(run), "--epochs", "1", "--resume"]) == 0
        assert (run / "standardization.safetensors").read_bytes() == saved
        caplog.clear()
        model = vaekit.load(run)
    assert "trained on standardized data, so the model's samples and means are in standardized units" in caplog.text
    assert abs(float(model.sample(2000).mean(0)[2])) < 5  # standardized: the data's third mean is −2 ± 100


def test_score_names_a_part_apart_from_its_own_columns(tmp_path):
    """A table column called `score` gave the CSV two `score` columns: csv.DictReader read the column's part as the
    row's score."""
    rng = np.random.default_rng(0)
    with open(tmp_path / "t.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["score", "rank", "x"])
        for _ in range(100):
            w.writerow([f"{rng.normal():.4f}", "ab"[rng.integers(2)], f"{rng.normal():.4f}"])
    assert main(["--quiet", "train", "--dataset", str(tmp_path / "t.csv"), "--likelihood", "mixed", "--epochs", "1",
                 "--latent-dim", "2", "--hidden", "8", "--out", str(tmp_path / "r")]) == 0
    assert main(["--quiet", "score", str(tmp_path / "r"), "--data", str(tmp_path / "t.csv"), "--k", "5",
                 "--out", str(tmp_path / "s.csv")]) == 0
    with open(tmp_path / "s.csv", newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header == ["line", "rank", "score", "mc_stderr", "flagged", "score_part", "rank_part", "x"]
    with open(tmp_path / "s.csv", newline="") as f:
        first = next(csv.DictReader(f))  # read by name, as a user's script would: the row's own score
    assert first["rank"] == "1" and first["score"] == rows[0][2] == max((r[2] for r in rows), key=float)
    assert first["score_part"] == rows[0][5] != first["score"]


@pytest.mark.parametrize(("names", "said"), [
    (["a\x85b", "b"], "column 1 of the header, 'a\\x85b', holds a control character"),
    (["a\u2028b", "b"], "column 1 of the header, 'a\\u2028b', holds a control character"),
    (["\u202eab", "b"], "column 1 of the header, '\\u202eab', holds a control character"),
    (["a", "a\u200bc"], "column 2 of the header, 'a\\u200bc', holds a control character"),
    (["\u00e9", "e\u0301"], "the header names column 'é' twice"),
    (["z" * 100_000, "b"], "column 1 of the header has a name of 100,000 characters"),
])
def test_header_names_that_hide_text_are_refused(tmp_path, names, said):
    path = tmp_path / "t.csv"
    path.write_text(",".join(names) + "\n" + "".join(f"{i / 7},{i % 3}\n" for i in range(20)), encoding="utf-8")
    with pytest.raises(vaekit.VaekitError) as e:
        vaekit.read_table(path)
    assert str(e.value).startswith(f"{path}: {said}") and len(str(e.value)) < 300


def test_wrong_types_in_the_api_are_one_line_and_a_single_hidden_size_is_a_list_of_one(tmp_path):
    torch.manual_seed(0)
    one = vaekit.VAE(data_dim=64, latent_dim=2, hidden=16)
    assert next(m.out_features for m in one.modules() if isinstance(m, torch.nn.Linear)) == 16
    for call, said in [(lambda: vaekit.VAE(data_dim=64, latent_dim=2, activation="nope"),
                        "VAE: activation 'nope' is not one of "),
                       (lambda: vaekit.load_dataset(5), "load_dataset: name a dataset ("),
                       (lambda: vaekit.read_table(5), "read_table: name the CSV or Parquet file to read, got 5")]:
        with pytest.raises(vaekit.VaekitError, match=f"^{re.escape(said)}"):
            call()
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    assert {p.device.type for p in vaekit.load(run, device=torch.device("cpu", 0)).parameters()} == {"cpu"}


def test_fit_after_a_hand_edit_of_config_json_blames_the_file_not_the_call(tmp_path):
    """config.json's seed edited 3 → 5, then `fit(…, seed=3, resume=True)` said the call's seed 3 differed."""
    x = (vaekit.load_dataset("digits").eval_split("test")[:300] > 0.5).float()
    vaekit.fit(digits_vae(), x, out=tmp_path / "r", epochs=1, seed=3, progress=False)
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    cfg["train"]["seed"] = 5
    (tmp_path / "r" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(vaekit.VaekitError) as e:
        vaekit.fit(digits_vae(), x, out=tmp_path / "r", epochs=2, seed=3, resume=True, progress=False)
    assert str(e.value) == (f"{tmp_path / 'r' / 'config.json'}: [train] seed = 5, but train_state.pt was trained with "
                            "3: config.json was changed since the last checkpoint, and that setting cannot change on a "
                            "resume; restore it, or train a new run elsewhere")


def test_a_schedule_edited_by_hand_is_announced_from_the_one_the_state_trained_on(tmp_path, caplog):
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "1", "--out", str(run)]) == 0
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["lr_schedule"] = "cosine"
    (run / "config.json").write_text(json.dumps(cfg))
    with caplog.at_level(logging.WARNING):
        assert main(["--quiet", "train", "--out", str(run), "--epochs", "2", "--resume"]) == 0
    assert "the learning-rate schedule changes on this resume (constant over 1 epochs → cosine over 2)" in caplog.text


def test_a_given_q_of_another_dtype_or_holding_nan_is_one_line():
    """A float64 q_z was torch's `mat1 and mat2 must have the same dtype`; a NaN one carried torch's multi-line text."""
    torch.manual_seed(0)
    model = vaekit.VAE(data_dim=64, latent_dim=2, hidden=(16,))
    x = (vaekit.load_dataset("digits").eval_split("test")[:7] > 0.5).float()
    q = model.posterior(x)
    wide = torch.distributions.Independent(torch.distributions.Normal(q.mean.double().detach(),
                                                                      q.stddev.double().detach()), 1)
    nan = torch.distributions.Independent(torch.distributions.Normal(
        torch.full((7, 2), float("nan")), torch.ones(7, 2), validate_args=False), 1)
    for bound in (lambda q_z: vaekit.elbo(model, x, q_z=q_z), lambda q_z: vaekit.iwae(model, x, k=3, q_z=q_z)):
        with pytest.raises(vaekit.VaekitError, match=r"^q_z draws float64, but the model computes in float32: build "):
            bound(wide)
        with pytest.raises(vaekit.VaekitError, match=r"^q_z's mean holds NaN or Inf$"):
            bound(nan)
    torch.manual_seed(1)
    given = vaekit.elbo(model, x, q_z=q, num_samples=3).elbo
    torch.manual_seed(1)
    assert torch.equal(given, vaekit.elbo(model, x, num_samples=3).elbo)  # the check draws nothing


def test_a_resume_says_when_metrics_jsonl_lost_epochs(tmp_path, caplog):
    run = tmp_path / "r"
    assert main(["--quiet", *map(str, TRAIN), "--epochs", "2", "--out", str(run)]) == 0
    (run / "metrics.jsonl").unlink()
    with caplog.at_level(logging.WARNING):
        assert main(["--quiet", "train", "--out", str(run), "--epochs", "3", "--resume"]) == 0
    assert f"{run / 'metrics.jsonl'}: holds 0 of the 2 epochs trained so far; the others' lines are lost" in caplog.text
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [3]
