"""Objectives: the pure estimators (`estimators`: ELBO, IWAE, DReG) and the training objectives built on
them (`Objective`s, registered by name). Importing this package registers them in the order of
`--objective`'s choices."""

# isort: off
from . import standard, disentangling, factorvae  # noqa: F401  (registration, in this order)
# isort: on
from .base import OBJECTIVES, Draw, Objective, Whole, one_process

__all__ = ["OBJECTIVES", "Draw", "Objective", "Whole", "one_process"]
