"""`vaekit disentanglement RUN`: the metrics of a run's posterior means against its data's factors,
the same numbers as `vaekit.metrics` on codes computed in Python; data without factors refused."""

import html
import json

import numpy as np
import pytest
import torch
from run_cli import vaekit_cli

from vaekit.disentanglement.metrics import mig, mutual_information
from vaekit.disentanglement.scoring import score_codes
from vaekit.evaluation.latents import posterior_summary
from vaekit.runs.checkpoint import load_run
from vaekit.runs.experiment import load_data

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Two factors on a 6 × 5 grid, each seen 8 times, drawn as 6-D real data by a fixed linear map."""
    root = tmp_path_factory.mktemp("scoring")
    rng = np.random.default_rng(0)
    factors = np.stack(np.meshgrid(np.arange(6), np.arange(5), indexing="ij"), -1).reshape(-1, 2).repeat(8, 0)
    x = (factors @ rng.normal(size=(2, 6)) + 0.05 * rng.normal(size=(len(factors), 6))).astype(np.float32)
    np.savez(root / "grid.npz", x=x, factors=factors, factor_names=np.array(["a", "b"]))
    vaekit_cli("--quiet", "train", "--dataset", root / "grid.npz", "--likelihood", "gaussian", "--standardize",
               "--latent-dim", "2", "--hidden", "32", "--epochs", "3", "--out", root / "run")
    return root / "run"


def test_cli_scores_are_the_metrics_of_the_posterior_means(run):
    out = json.loads(vaekit_cli("disentanglement", run, "--json").stdout)
    cfg, model = load_run(run)
    ds = load_data(cfg)
    splits = ("train", "val", "test")
    x = torch.cat([ds.eval_split(s) for s in splits])
    factors = torch.cat([ds.factors[s] for s in splits])
    codes, _ = posterior_summary(model, x)
    expected = score_codes(codes, factors)
    assert out["n"] == 240 and out["factors"] == ["a", "b"]
    assert {k: out[k] for k in expected} == expected
    assert out["mig"] == mig(codes.numpy(), factors.numpy())
    picked = json.loads(vaekit_cli("disentanglement", run, "--metrics", "mig,sap", "--split", "test", "--json").stdout)
    assert set(picked) == {"split", "n", "factors", "mig", "sap"} and picked["n"] == len(ds.split("test"))


def test_data_without_factors_and_unknown_metrics_are_refused(run, tmp_path):
    vaekit_cli("--quiet", "train", "--dataset", "digits", "--latent-dim", "2", "--hidden", "16", "--epochs", "1",
               "--out", tmp_path / "digits")
    for args, message in (((tmp_path / "digits",), "has no factors"), ((run, "--metrics", "mig,nope"), "choose from")):
        proc = vaekit_cli("disentanglement", *args, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("vaekit: error: ") and message in proc.stderr


def test_report_shows_the_scores_and_labels_traversals_by_factor(run):
    pytest.importorskip("matplotlib")
    from vaekit.disentanglement.scoring import captured_factors, score_model
    from vaekit.pictures.report import run_metrics, traversals

    vaekit_cli("--quiet", "report", run, "--k", "10")
    page = (run / "report.html").read_text(encoding="utf-8")
    cfg, model = load_run(run)
    ds = load_data(cfg)
    x, factors = ds.eval_split("test"), ds.factors["test"]
    scores = score_model(model, x, factors, skip=True)
    assert run_metrics(run, k=10)["disentanglement"] == scores
    assert scores["factorvae"].startswith("not computed: ") and "several rows per factor value" in scores["betavae"]
    for name, value in scores.items():  # 24 test rows: too few for the vote scores, which say so
        assert f"<td>{name}</td><td>{value:.4f}</td>" in page if isinstance(value, float) else html.escape(value) in page
    codes, _ = posterior_summary(model, x)
    captures = captured_factors(codes, factors, ds.factor_names)
    mi = mutual_information(codes, factors)  # the matrix the labels come from
    for j, label in enumerate(captures):
        best = int(mi[j].argmax())
        assert label == (f"{ds.factor_names[best]}, {mi[j, best]:.2f} nats" if mi[j, best] >= 0.05 else "none")
    _, _, rows, _ = traversals(model, x, captures=captures)
    assert all(any(c in row for c in captures) for row in rows)


def test_a_factor_constant_on_the_split_is_captured_by_no_code():
    """Issue 27: one factor constant on the test split made captured_factors, and so the report, refuse
    everything; a constant shares no information with any code, so it is simply never the one captured."""
    from vaekit.disentanglement.scoring import captured_factors

    g = torch.Generator().manual_seed(0)
    f = torch.stack([torch.randint(0, 3, (300,), generator=g), torch.zeros(300, dtype=torch.long)], 1)
    codes = torch.randn(300, 2, generator=g)
    codes[:, 0] += 3 * f[:, 0]
    labels = captured_factors(codes, f, ["shape", "fixed"])
    assert labels[0].startswith("shape, ") and float(labels[0].split(", ")[1].split()[0]) > 0.5
    assert all("fixed" not in lab for lab in labels)
