"""What every observation model p(x|z) is: a `Likelihood` head, its support, and the registry.

Every observation model turns the decoder output g(z; θ) into a torch distribution over x whose
`log_prob` returns one value per example (the pixel dimension is reinterpreted with `Independent`).
All normalizing constants are kept, so log-densities are true log-densities in nats. One module per
support holds the families (binary, real, unit, eight_bit, counts); `--likelihood` names one.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.distributions import Distribution

from ...data.dataset import SUPPORTS  # what data a likelihood takes; the data layer checks it
from ..distributions import Part
from ..registry import Registry


class Likelihood(Part):
    """Maps the decoder output h to p(x|z), event shape [D]. `out_features(D)`: how many outputs it
    needs; `support`: one of SUPPORTS, which decides binarization and the data checks."""

    support = "real"

    def out_features(self, data_dim: int) -> int:
        return data_dim

    def encoder_input(self) -> nn.Module | None:
        """How the encoder sees x, where the data's raw values would not do (a module x → features, with
        `features` if their number is not D): counts as log(1 + x), a table's cells one-hot and masked. None:
        as they are."""
        return None

    def learned(self) -> dict[str, Tensor]:
        """The likelihood's own learned parameters in their units, by name (a learned σ, a dispersion), to report
        beside the numbers; {} where p(x|z) learns nothing of its own."""
        return {}

    def forward(self, h: Tensor) -> Distribution:  # pragma: no cover - interface
        raise NotImplementedError


LIKELIHOODS = Registry("likelihood")


def likelihood_support(name: str) -> str:
    """The support of the likelihood registered as `name` (what data it takes: SUPPORTS)."""
    support = getattr(LIKELIHOODS.build(name, data_dim=1), "support", "real")
    if support not in SUPPORTS:
        raise ValueError(f"likelihood {name!r} declares support {support!r}; use one of {', '.join(SUPPORTS)}")
    return support
