from pathlib import Path

import pytest
import torch

# Files that train on MNIST, launch torchrun or train a run per row: last, so a loaded machine shows the rest's
# progress first (issue 27: `make test` printed 8 dots in an hour, starting with a test that trains on MNIST).
SLOW_LAST = ("test_contract.py", "test_distributed.py", "test_faults.py", "test_benchmarks.py", "test_mnist.py")


def pytest_collection_modifyitems(config, items):
    """The files of SLOW_LAST after the others, each file's tests still together and in order (a stable sort)."""
    items.sort(key=lambda item: Path(str(item.fspath)).name in SLOW_LAST)


def pytest_report_header(config):
    return ["vaekit: about 1000 tests, about 10 minutes on 2 idle cores; the slow files run last: "
            + ", ".join(SLOW_LAST) + ". On a busy machine OMP_NUM_THREADS=1 can be many times faster."]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
