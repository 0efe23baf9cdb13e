"""Network building blocks. No probability here: these map tensors to tensors."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "softplus": nn.Softplus}


def mlp(
    in_features: int,
    hidden: Sequence[int],
    out_features: int,
    activation: str = "relu",
    init: str = "default",
) -> nn.Sequential:
    """Linear layers of sizes in → hidden… → out with `activation` between them (none after the last).

    `hidden=()` gives a single linear map. `init="glorot"` uses Glorot-uniform weights and zero biases,
    as in Kingma & Welling (2013) and Burda et al. (2016); "default" keeps PyTorch's.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose from {sorted(ACTIVATIONS)}")
    sizes = [in_features, *hidden, out_features]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    net = nn.Sequential(*layers)
    if init == "glorot":
        for m in net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    elif init != "default":
        raise ValueError(f"unknown init {init!r}; choose 'default' or 'glorot'")
    return net
