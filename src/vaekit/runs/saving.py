"""The Python user's run directories: `vaekit.save(model, DIR)` and `vaekit.load(DIR)`, and the config that records
a model built in Python (what is known of it, the rest marked unknown)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import VaekitError
from ..training.distributed import resolve_device
from .checkpoint import (
    CONFIG,
    METRICS,
    STANDARDIZATION,
    STATE,
    load_config,
    load_run,
    load_standardization,
    save_config,
    save_weights,
    writing,
)
from .config import Config, ModelConfig, plugins_needed

log = logging.getLogger(__name__)


def model_config(model: nn.Module) -> ModelConfig:
    """The config that rebuilds `model`: its settings where it was built from settings (`VAE(data_dim=…)`,
    `build_model`), else one that marks it as built in Python (the user rebuilds it to load it)."""
    settings = getattr(model, "settings", None)
    if settings is None:
        return python_model_config(model)
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    values = {k: v for k, v in settings.items() if k in known and v is not None}
    values["data_shape"] = tuple(settings.get("data_shape") or (settings["data_dim"],))
    for name in ("latent_dim", "hidden", "decoder_hidden", "layer_hidden", "plugins"):
        if name in values:
            values[name] = (values[name],) if isinstance(values[name], int) else tuple(values[name])
    return ModelConfig(**values)


KNOWN_IN_PYTHON = {"data_shape", "latent_dim", "built_in_python", "plugins", "python_parts", "unknown", "condition",
                   "condition_classes", "columns"}  # what a model built from modules still tells


def python_model_config(model: nn.Module) -> ModelConfig:
    """What is known of a model built from modules (VAE(encoder, decoder, prior)): its shapes and the class of each
    part; every other [model] setting is listed in `unknown` (its value in config.json is only the default)."""
    data_dim = getattr(model, "data_dim", None)
    roles = [("encoder", getattr(model, "encoder", None)), ("decoder", getattr(model, "decoder", None)),
             ("likelihood", getattr(getattr(model, "decoder", None), "head", None)), ("prior", getattr(model, "prior", None))]
    parts = tuple(f"{role}: {type(m).__module__}.{type(m).__qualname__}" for role, m in roles if m is not None)
    values: dict[str, Any] = {"data_shape": (data_dim,) if data_dim else (), "built_in_python": True, "python_parts": parts}
    with contextlib.suppress(Exception):  # a prior of the user's that cannot say its size: left unknown
        values["latent_dim"] = (int(model.latent_dim),)
    known = KNOWN_IN_PYTHON - ({"latent_dim"} - set(values))
    values["unknown"] = tuple(f"model.{f.name}" for f in dataclasses.fields(ModelConfig) if f.name not in known)
    return ModelConfig(**values)


def save(model: nn.Module, run: str | Path) -> Path:
    """Write `model` as a run directory: config.json (what rebuilds it) and model.safetensors.
    `vaekit.load(run)` rebuilds a model made of registered parts; a model with the user's own
    networks loads with `vaekit.load(run, model=the same architecture)`."""
    if not isinstance(run, (str, os.PathLike)) or not str(run).strip() or "\0" in str(run):
        raise VaekitError(f"vaekit.save: name a folder to write the model into (got {run!r:.80})")
    if not isinstance(model, nn.Module) or not all(hasattr(model, n) for n in ("posterior", "prior", "decoder")):
        raise VaekitError(f"vaekit.save: the model must be a VAE (vaekit.VAE, or a module with posterior, prior and "
                          f"decoder), got {type(model).__name__}")
    bad = next((name for name, t in model.state_dict().items() if t.is_floating_point() and
                not bool(torch.isfinite(t).all())), None)
    if bad is not None:  # vaekit.load would refuse the file
        raise VaekitError(f"vaekit.save: the model's weights hold NaN or Inf (in {bad}); nothing is written")
    run = Path(run)
    cfg = Config(model=model_config(model))
    unknown = (*cfg.model.unknown, "data", "train")  # saved, not trained here: neither section describes the model
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, plugins=plugins_needed(cfg), unknown=unknown))
    with writing(run):  # a run being trained holds the lock: refused, naming its process
        trained = [name for name in (STATE, METRICS) if (run / name).exists() or (run / name).is_symlink()]
        if not trained and (run / CONFIG).exists() and "train" not in load_config(run).model.unknown:
            trained = [CONFIG]  # a run stopped before its first checkpoint: its config.json is what restarts it
        if trained:
            raise VaekitError(f"{run}: holds a run ({trained[0]}); vaekit.save writes only into a new folder or over "
                              "an earlier vaekit.save: choose another folder")
        save_config(run, cfg)
        save_weights(run, model)
    return run


def load(run: str | Path, model: nn.Module | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """The trained model of a run directory (`vaekit.load`): rebuilt from config.json, or `model`
    (the same architecture, built by the caller) with the saved weights loaded into it; on `device` (cpu, cuda,
    cuda:N or auto)."""
    if not isinstance(device, (str, torch.device)):
        raise VaekitError(f"vaekit.load: device must be a name such as 'cpu' or 'cuda', got {type(device).__name__}")
    device = resolve_device(str(device), flag="vaekit.load: device")
    if not isinstance(run, (str, os.PathLike)) or "\0" in str(run):
        raise VaekitError(f"vaekit.load: name the run directory to load, got {run!r:.80}")
    if model is not None and not isinstance(model, nn.Module):
        raise VaekitError(f"vaekit.load: model must be the torch module to load the weights into, got "
                          f"{type(model).__name__}")
    lazy = lazy_parameters(model) if model is not None else []
    if lazy:
        raise VaekitError(f"vaekit.load: the model's lazy layers have no weights yet ({lazy[0]}); run one batch "
                          "through it first (model(x[:1])), then load")
    cfg, loaded = load_run(run, model)
    if cfg.data.standardize:  # `vaekit sample`/`decode` return data units; the model itself knows none
        log.warning("%s: trained on standardized data, so the model's samples and means are in standardized units: "
                    "x = shift + spread · x_std, both in %s/standardization.safetensors", run, run)
    return loaded.to(device)


def lazy_parameters(model: nn.Module) -> list[str]:
    """The names of `model`'s parameters and buffers that a lazy layer (`nn.LazyLinear`) has not made yet."""
    from torch.nn.parameter import is_lazy

    return [n for n, t in [*model.named_parameters(), *model.named_buffers()] if is_lazy(t)]


def to_data_units(cfg: Config, run: str | Path, x: torch.Tensor) -> torch.Tensor:
    """Undo the run's standardization on model outputs x: [..., D] (the identity without one); outputs of a few
    spreads that pass float32 there (a shift or spread near 3e38 in the file) are refused, not written as Inf (outputs
    far out, from latents far out, are the caller's to say)."""
    if not cfg.data.standardize:
        return x
    shift, spread = load_standardization(Path(run), cfg.model.data_dim)
    out = x * spread + shift
    if not bool(torch.isfinite(out).all()) and bool(torch.isfinite(x).all()) and float(x.abs().max()) <= 1e3:
        raise VaekitError(f"{Path(run) / STANDARDIZATION}: shift + spread · x passes float32's range (±3.4e38) for "
                          f"these outputs (spread up to {float(spread.abs().max()):.3g}, shift up to "
                          f"{float(shift.abs().max()):.3g}); not the statistics of real data: restore the file")
    return out
