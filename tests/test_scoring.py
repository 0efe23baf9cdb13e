"""`vaekit disentanglement RUN`: the metrics of a run's posterior means against its data's factors,
the same numbers as `vaekit.metrics` on codes computed in Python; data without factors refused."""

import json

import numpy as np
import pytest
import torch
from run_cli import vaekit_cli

from vaekit.checkpoint import load_run
from vaekit.experiment import load_data
from vaekit.latents import posterior_summary
from vaekit.metrics import mig
from vaekit.scoring import score_codes

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
