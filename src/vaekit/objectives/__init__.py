"""Objectives: the pure estimators (`estimators`: ELBO, IWAE, DReG) and the registered training
objectives built on them, registered in this order (the order of `--objective`'s choices)."""

from . import disentangling, factorvae, standard  # noqa: F401  (elbo and iwae register themselves)
from .base import OBJECTIVES, Draw

OBJECTIVES.register("beta-tcvae", disentangling.beta_tcvae_objective)
OBJECTIVES.register("dip-vae-1", disentangling.dip_vae_1_objective)
OBJECTIVES.register("dip-vae-2", disentangling.dip_vae_2_objective)
OBJECTIVES.register("capacity", disentangling.capacity_objective)
OBJECTIVES.register("factorvae", factorvae.factorvae_objective)

__all__ = ["OBJECTIVES", "Draw"]
