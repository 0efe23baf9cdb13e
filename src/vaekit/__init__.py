"""vaekit: variational auto-encoders on PyTorch, correct to the last nat."""

__version__ = "0.1.0"

from .config import Config, DataConfig, ModelConfig, TrainConfig
from .data import Dataset, load_dataset
from .errors import VaekitError
from .evaluate import evaluate_elbo, log_likelihood
from .exact import LinearGaussian
from .model import VAE, Encoder, GenerativeModel
from .objectives import ELBO, elbo, iwae_bound
from .run import load, train_run

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
