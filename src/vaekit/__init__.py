"""vaekit: variational auto-encoders on PyTorch, correct to the last nat."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("vaekit")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

from .config import Config, DataConfig, ModelConfig, TrainConfig
from .data import Dataset, load_dataset
from .errors import VaekitError
from .evaluate import evaluate_elbo, log_likelihood
from .experiment import load, train_run
from .model import VAE, Encoder, GenerativeModel
from .objectives import ELBO, elbo, iwae_bound
from .references import LinearGaussian

__all__ = [
    "ELBO",
    "VAE",
    "Config",
    "DataConfig",
    "Dataset",
    "Encoder",
    "GenerativeModel",
    "LinearGaussian",
    "ModelConfig",
    "TrainConfig",
    "VaekitError",
    "__version__",
    "elbo",
    "evaluate_elbo",
    "iwae_bound",
    "load",
    "load_dataset",
    "log_likelihood",
    "train_run",
]
