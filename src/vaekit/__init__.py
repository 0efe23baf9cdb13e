"""vaekit: variational auto-encoders on PyTorch, correct to the last nat."""

__version__ = "0.1.0"

from .errors import VaekitError
from .exact import LinearGaussian
from .evaluate import evaluate_elbo, log_likelihood
from .model import VAE, Encoder, GenerativeModel
from .objectives import ELBO, elbo, iwae_bound
from .config import Config, DataConfig, ModelConfig, TrainConfig
from .data import Dataset, load_dataset
from .run import load, train_run

__all__ = [
    "VAE", "Encoder", "GenerativeModel", "ELBO", "elbo", "iwae_bound", "LinearGaussian",
    "evaluate_elbo", "log_likelihood", "Config", "DataConfig", "ModelConfig", "TrainConfig",
    "Dataset", "load_dataset", "load", "train_run", "VaekitError", "__version__",
]
