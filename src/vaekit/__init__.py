"""vaekit: variational auto-encoders on PyTorch, correct to the last nat."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("vaekit")
except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
    __version__ = "0+unknown"

from .errors import quiet_start

with quiet_start():  # a Ctrl-C while torch is imported: one line from the command
    from .data import Dataset, load_dataset
    from .data.table_files import Table, read_table
    from .data.tables import Schema
    from .disentanglement import (
        metrics,  # disentanglement metrics on any arrays of codes: vaekit.metrics.mig(codes, factors)
    )
    from .errors import VaekitError
    from .evaluation.bounds import elbo, iwae, iwae_bound
    from .evaluation.estimates import evaluate_elbo, log_likelihood
    from .evaluation.references import LinearGaussian
    from .evaluation.tables import impute, score
    from .model import VAE, GenerativeModel, build_model
    from .objectives import OBJECTIVES, Objective
    from .objectives.estimators import ELBO
    from .parts.likelihoods import LIKELIHOODS
    from .parts.modules import Decoder, Encoder
    from .parts.networks import ARCHITECTURES
    from .parts.posteriors import POSTERIORS
    from .parts.priors import PRIORS, StandardNormal
    from .parts.registry import Setting
    from .runs.config import Config, DataConfig, ModelConfig, TrainConfig
    from .runs.experiment import train_run
    from .runs.fit import fit
    from .runs.plugins import load_plugin
    from .runs.saving import load, save

register_prior = PRIORS.register  # @vaekit.register_prior("name") on a factory: (latent_dim, …) → module
register_posterior = POSTERIORS.register  # factory: (latent_dim, …) → head mapping h to Q(z|x)
register_likelihood = LIKELIHOODS.register  # factory: (data_dim, sigma, …) → head mapping h to p(x|z)
register_architecture = ARCHITECTURES.register  # factory: (role, in_features, out_features, hidden, …) → nn.Module
register_objective = OBJECTIVES.register  # an `Objective` subclass: settings in __init__, loss(model, x, draw, …)

__all__ = [
    "ELBO",
    "VAE",
    "Config",
    "DataConfig",
    "Dataset",
    "Decoder",
    "Encoder",
    "GenerativeModel",
    "LinearGaussian",
    "ModelConfig",
    "Objective",
    "Schema",
    "Setting",
    "StandardNormal",
    "Table",
    "TrainConfig",
    "VaekitError",
    "__version__",
    "build_model",
    "elbo",
    "evaluate_elbo",
    "fit",
    "impute",
    "iwae",
    "iwae_bound",
    "load",
    "load_dataset",
    "load_plugin",
    "log_likelihood",
    "metrics",
    "read_table",
    "register_architecture",
    "register_likelihood",
    "register_objective",
    "register_posterior",
    "register_prior",
    "save",
    "score",
    "train_run",
]
