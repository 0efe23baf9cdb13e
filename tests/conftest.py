import os
from pathlib import Path

import pytest
import torch

# Files that train on MNIST, launch torchrun or train a run per row: last, so a loaded machine shows the rest's
# progress first (issue 27: `make test` printed 8 dots in an hour, starting with a test that trains on MNIST).
SLOW_LAST = ("test_contract.py", "test_distributed.py", "test_faults.py", "test_benchmarks.py", "test_mnist.py")


def pytest_collection_modifyitems(config, items):
    """The files of SLOW_LAST after the others, each file's tests still together and in order (a stable sort);
    under pytest-xdist (`make test`) before them, so the longest files start first and no worker waits alone at
    the end for one."""
    parallel = "PYTEST_XDIST_WORKER" in os.environ
    items.sort(key=lambda item: (Path(str(item.fspath)).name in SLOW_LAST) != parallel)


def pytest_configure(config):
    if "PYTEST_XDIST_WORKER" in os.environ:  # a worker per core: one thread each (threads beside processes crawl)
        torch.set_num_threads(1)


def pytest_report_header(config):
    return ["vaekit: about 1400 tests; `make test` runs them on every core (pytest-xdist, a thread each), about 15 "
            "minutes on 2 idle cores; `pytest tests` runs them in one process, the slow files last: "
            + ", ".join(SLOW_LAST) + ". On a busy machine OMP_NUM_THREADS=1 can be many times faster."]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
