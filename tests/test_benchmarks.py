"""Smoke runs of the benchmark scripts on the real MNIST files (a sliver of the budget)."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))


def _mnist_folder() -> Path:
    from common import default_data_dir  # the benchmarks' data root: $VAEKIT_DATA, else ../shared/data

    return Path(default_data_dir()) / "mnist"


@pytest.mark.skipif(not _mnist_folder().is_dir(), reason=f"{_mnist_folder()} not found (shared data)")
def test_mnist_nll_protocol_smoke():
    import mnist_nll

    cfg = mnist_nll.protocol_config("iwae", 5, mnist_nll.default_data_dir())
    assert (cfg.model.hidden, cfg.model.latent_dim, cfg.model.activation, cfg.model.init) == ((200, 200), (50,), "tanh", "glorot")
    assert (cfg.train.batch_size, cfg.train.adam_eps, cfg.data.val_size) == (20, 1e-4, 400)
    stages = mnist_nll.schedule(1.0)
    assert sum(p for p, _ in stages) == 3280 and stages[7][1] == pytest.approx(1e-4)
    out = mnist_nll.main(["--objective", "iwae", "--k", "2", "--passes-scale", "0.0003", "--eval-k", "20", "--eval-n", "100"])
    # a sliver of training already beats the untrained model's ~550 nats; the bound holds: NLL ≤ −ELBO on average
    assert 100 < out["nll"] < 400 and out["nll"] <= -out["elbo"] + 3 * out["stderr"]
