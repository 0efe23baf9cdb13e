"""`--init-from RUN`: a new run that starts from another run's weights, with that run's settings as its defaults."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from torch import nn

from ..data import IN_MEMORY, Dataset
from ..errors import VaekitError
from .checkpoint import load_config, load_weights
from .config import Config, ModelConfig
from .weights_kept import weights_sha256

log = logging.getLogger(__name__)


def init_source(run: Path, cfg: Config) -> ModelConfig:
    """`--init-from RUN`, before the data are read: a run whose model its config rebuilds, and data in a file.
    Returns RUN's model config (`same_model` compares it once the data have filled in this run's)."""
    saved = load_config(run).model
    if saved.built_in_python:  # its config records no network: the registered one built from it is another model
        raise VaekitError(f"--init-from {run}: its model was built in Python, which no setting rebuilds; load it with "
                          "vaekit.load(RUN, model=…) and go on with vaekit.fit")
    if cfg.data.dataset == IN_MEMORY:  # a vaekit.fit run's data are in no file
        raise VaekitError(f"--init-from {run}: its data were tensors given to vaekit.fit; name the data to train on "
                          "with --dataset FILE")
    return saved


def same_shape(run: Path, saved: ModelConfig, dataset: Dataset) -> None:
    """`--init-from RUN`: RUN's model (`saved`) takes examples of the data's shape."""
    if saved.data_shape and tuple(saved.data_shape) != tuple(dataset.shape):
        raise VaekitError(f"--init-from {run}: that run's model takes examples of shape {tuple(saved.data_shape)}, but "
                          f"{dataset.name} has {tuple(dataset.shape)}; start from a run trained on data of this shape")


def same_model(run: Path, saved: ModelConfig, cfg: Config) -> None:
    """`--init-from RUN`: the model to train must be RUN's (`saved`), the only one its weights fit."""
    differ = [f.name for f in dataclasses.fields(saved) if getattr(saved, f.name) != getattr(cfg.model, f.name)]
    if differ:
        name = differ[0]
        raise VaekitError(f"--init-from {run}: [model] {name} = {getattr(cfg.model, name)!s} differs from that run's "
                          f"{getattr(saved, name)!s}; its weights fit only its own model (leave the model's settings out)")


def start_from(model: nn.Module, run: Path, say: bool = True) -> None:
    """Load the weights of the run `--init-from` names into `model` (checked by `same_model`)."""
    load_weights(run, model)
    if say:
        log.info("starting from the weights of %s (model.safetensors sha256 %s…)", run, weights_sha256(run)[:12])
