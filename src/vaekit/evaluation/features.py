"""The feature space sample quality is measured in (`evaluation.quality`).

Inception features, which FID uses, know nothing of 28×28 digits; papers on MNIST-like data train their own
classifier. vaekit does the same: for a dataset with labels (digits, mnist, fashion-mnist, your .npz with y) a
seeded MLP classifier, D → 512 → 256 → classes, is trained on the training split's grey levels and stored in the
user cache ($XDG_CACHE_HOME/vaekit/classifiers, keyed by a hash of the data and the recipe), and the features
are its 256 penultimate activations. Without labels (frey-faces, binarized-mnist) the features are the training
split's first 32 principal components. Every output names the space: these are not Inception FIDs.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..data import Dataset
from ..errors import VaekitError
from ..files import atomic_write, check_regular, make_dirs
from ..rng import forked_rng

log = logging.getLogger(__name__)
RECIPE = "mlp-512-256 adam 1e-3 batch 128 3000 steps seed 0 v1"  # in the cache key: a new recipe retrains
PCA_COMPONENTS = 32
MIN_ACCURACY = 0.5  # a stored classifier below this on the test split is not the recipe's: trained again


@dataclass
class FeatureSpace:
    """features(x [N, D] in the data's units) → [N, F]; `name` says which space (printed with every number)."""

    name: str
    features: Callable[[Tensor], Tensor]


def grey_levels(dataset: Dataset, split: str) -> Tensor:
    """A split in the data's units, float32, never binarized (what samples E[x|z] are compared with)."""
    return dataset.split(split).to(torch.float32) / dataset.scale


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "vaekit" / "classifiers"


def classifier(dim: int, classes: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, classes))


def train_classifier(x: Tensor, y: Tensor, classes: int, steps: int = 3000, batch: int = 128) -> nn.Sequential:
    """The seeded classifier of the module docstring, trained for `steps` Adam steps on (x, y)."""
    with forked_rng(torch.device("cpu")):
        torch.manual_seed(0)
        net = classifier(x.shape[1], classes)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        for step in range(steps):
            if step % math.ceil(x.shape[0] / batch) == 0:
                order = torch.randperm(x.shape[0])
            i = order[(step % math.ceil(x.shape[0] / batch)) * batch :][:batch]
            loss = nn.functional.cross_entropy(net(x[i]), y[i])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return net.eval()


def labelled_space(dataset: Dataset) -> FeatureSpace:
    """The stored classifier of this dataset's training split, trained first where the cache lacks it (or holds
    one that is damaged, of another recipe, or no longer classifies: its accuracy is measured on every load)."""
    x, y = grey_levels(dataset, "train"), dataset.labels["train"]
    classes = int(y.max()) + 1
    key = hashlib.sha256(RECIPE.encode() + x.numpy().tobytes() + y.numpy().tobytes()).hexdigest()[:16]
    path = cache_root() / f"{dataset.name.replace(os.sep, '_')[-60:]}-{key}.safetensors"
    net, accuracy = _stored(path, x.shape[1], classes, dataset)
    if net is None:
        log.info("training the feature classifier for %s (once; stored in %s)", dataset.name, path)
        net = train_classifier(x, y, classes)
        accuracy = _accuracy(net, dataset)
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        try:
            make_dirs(path.parent)
            atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"recipe": RECIPE}))
        except VaekitError as e:  # a cache is a convenience: the numbers are made all the same
            log.warning("%s; the feature classifier is not stored and will be trained again next time", e)
    name = f"the penultimate layer of vaekit's classifier of {dataset.name} (test accuracy {accuracy:.4f}; not Inception)"
    return FeatureSpace(name, lambda v: _penultimate(net, v))


def _stored(path: Path, dim: int, classes: int, dataset: Dataset) -> tuple[nn.Sequential | None, float | None]:
    """The cached classifier and its accuracy measured now, or (None, None) where it cannot be trusted."""
    net = classifier(dim, classes)
    try:
        check_regular(path, sum(t.numel() * 4 for t in net.state_dict().values()) + (1 << 20))
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("recipe") != RECIPE:
                return None, None
        net.load_state_dict(load_file(path))
    except Exception:  # noqa: BLE001 - absent, damaged, a FIFO, another shape: train it afresh
        return None, None
    if not all(torch.isfinite(t).all() for t in net.state_dict().values()):
        return None, None
    accuracy = _accuracy(net.eval(), dataset)
    return (net, accuracy) if accuracy >= MIN_ACCURACY else (None, None)


def _accuracy(net: nn.Sequential, dataset: Dataset) -> float:
    split = "test" if "test" in dataset.labels else "train"
    with torch.no_grad():
        guess = torch.cat([net(xb).argmax(1) for xb in grey_levels(dataset, split).split(1000)])
    return float((guess == dataset.labels[split]).double().mean())


def _penultimate(net: nn.Sequential, x: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([net[:-1](xb.reshape(xb.shape[0], -1).to(torch.float32)) for xb in x.split(1000)])


def pca_space(dataset: Dataset, components: int = PCA_COMPONENTS) -> FeatureSpace:
    """Projections on the training split's first principal components (float64 SVD of the centred data)."""
    x = grey_levels(dataset, "train").to(torch.float64)
    mean = x.mean(0)
    basis = torch.linalg.svd(x - mean, full_matrices=False).Vh[:components].T  # [D, c]
    name = f"the first {basis.shape[1]} principal components of {dataset.name}'s training split (not Inception)"
    return FeatureSpace(name, lambda v: (v.reshape(v.shape[0], -1).to(torch.float64) - mean) @ basis)


def feature_space(dataset: Dataset) -> FeatureSpace:
    """The classifier's features where the training split has labels, else principal components."""
    return labelled_space(dataset) if "train" in dataset.labels else pca_space(dataset)
