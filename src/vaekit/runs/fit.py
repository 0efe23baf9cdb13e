"""The Python user's path: any VAE, in-memory tensors, the CLI's loop, checkpoints and seeds."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import IN_MEMORY, tensor_dataset
from ..errors import NonFiniteLossError, VaekitError
from ..evaluation.estimates import checked_examples
from ..training.distributed import SINGLE, resolve_device
from ..training.loop import NONFINITE_ADVICE, SMALLER_LR
from . import checkpoint as ckpt
from .config import Config, settings
from .experiment import TrainResult, open_run, train_model, writing_lock
from .saving import lazy_parameters, model_config

log = logging.getLogger(__name__)


def fit(
    model: nn.Module,
    x_train: torch.Tensor | Any,
    x_val: torch.Tensor | Any | None = None,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    device: str = "cpu",
    binarize: str = "none",
    y_train: torch.Tensor | Any | None = None,
    y_val: torch.Tensor | Any | None = None,
    **train: Any,
) -> TrainResult:
    """Train any VAE (`VAE(encoder, decoder, prior)`, your own networks included) on in-memory data,
    with the CLI's loop, checkpoints and seeds: `vaekit.fit(model, x, epochs=20, lr=1e-3)`.

    x_train, x_val: tensors or arrays [N, ...] (a seeded 10% of x_train is held out when x_val is
    None), checked against the likelihood's support; `binarize="dynamic"` draws binary data from grey
    levels for a Bernoulli likelihood. `train`: any `TrainConfig` field (epochs, batch_size, lr, seed,
    objective, the last with its settings: `objective={"name": "elbo", "beta": 4.0}`, …). With `out`, a run directory is written (and `resume=True` continues it:
    pass the same model, built the same way, and the same data). A conditional VAE (one with a
    `condition`) takes each example's label: y_train [N] (and y_val with x_val), whole numbers.
    """
    if not all(hasattr(model, name) for name in ("posterior", "prior", "decoder")):
        raise VaekitError(f"vaekit.fit trains a VAE (vaekit.VAE(encoder, decoder, prior) or vaekit.build_model), got "
                          f"{type(model).__name__}")
    if out is not None and (not isinstance(out, (str, os.PathLike)) or not str(out).strip() or "\0" in str(out)):
        raise VaekitError(f"vaekit.fit: out must name a folder for the run (or be None), got {out!r:.80}")
    if not isinstance(resume, (bool, np.bool_)) or (resume and out is None):
        raise VaekitError(f"vaekit.fit: resume=True continues the run in out=RUN, got resume={resume!r:.40}" +
                          (" and no out" if out is None else ""))
    if not isinstance(device, (str, torch.device)):
        raise VaekitError(f"vaekit.fit: device must be a name such as 'cpu' or 'cuda', got {type(device).__name__}")
    first = checked_examples(model, x_train, scored=False)  # before anything is written: examples of the model's size
    if x_val is not None:
        checked_examples(model, x_val, scored=False)
    train = {k: v.item() if isinstance(v, np.generic) else v for k, v in train.items()}  # np.int64(5) as 5
    cfg = Config.from_dict({"train": train}, source="vaekit.fit")
    device = resolve_device(str(device), flag="device=")
    if cfg.train.init_from:
        raise VaekitError("vaekit.fit trains the model it is given: load the run's weights into it first "
                          "(vaekit.load(RUN) or vaekit.load(RUN, model=…)) instead of init_from")
    conditional = getattr(model, "condition", None) is not None
    if conditional != (y_train is not None):
        raise VaekitError("this VAE is conditioned on labels: pass y_train (and y_val with x_val)" if conditional else
                          "y_train given, but this VAE takes no labels (build it with condition='label')")
    support = getattr(getattr(model, "decoder", None), "support", None) or "real"
    dataset = tensor_dataset(x_train, x_val, support, binarize, cfg.train.seed, y_train, y_val)
    mc = model_config(model)
    mc = replace(mc, data_shape=mc.data_shape or tuple(dataset.shape))
    if conditional:  # the loop gathers each batch's labels with its rows
        classes = mc.condition_classes or getattr(model.condition, "classes", 0) or dataset.classes
        mc = replace(mc, condition="label", condition_classes=classes)
    cfg = replace(cfg, model=mc, data=replace(cfg.data, dataset=IN_MEMORY, binarize=dataset.binarize,
                                              digest=digest(x_train, x_val, y_train, y_val) if out is not None else ""))
    with writing_lock(Path(out) if out is not None else None, SINGLE), epoch_lines(progress):
        if resume and out is not None and (Path(out) / ckpt.CONFIG).exists() and not ckpt.load_config(out).data.digest:
            log.warning("%s: a run written before vaekit recorded its tensors' digest; the data given are not checked "
                        "against it", out)
            cfg = replace(cfg, data=replace(cfg.data, digest=""))
        default = Config()  # the model and data as before; of the training settings, the keywords the call passed
        given = {(s, f.name) for s, f in settings() if s != "train" and
                 getattr(getattr(cfg, s), f.name) != getattr(getattr(default, s), f.name)} | {("train", k) for k in train}
        out, resume, cfg = open_run(cfg, out, bool(resume), given=given, words=("resume=True", "out"))
        if resume and lazy_parameters(model):  # a lazy layer gets its shape from one example; the checkpoint its values
            with torch.no_grad():
                model(first[:1])
        if not resume:  # the training noise from `seed`, as the CLI's (a resume restores the saved stream)
            torch.manual_seed(cfg.train.seed)
        try:
            return train_model(model.to(device), cfg, dataset, out, resume, progress, SINGLE, device)
        except NonFiniteLossError as e:  # the advice in fit's words: its keywords, not the command line's flags
            raise NonFiniteLossError(str(e).replace(SMALLER_LR, "with resume=True and a smaller lr").replace(
                NONFINITE_ADVICE, FIT_ADVICE)) from None


FIT_ADVICE = ("Try a smaller lr, grad_clip=100, objective={\"name\": …, \"kl_warmup_epochs\": 5}, or data near unit "
              "scale (standardize real values before fit); skip_nonfinite=N skips N such batches")


def digest(*given: Any) -> str:
    """The sha256 of the tensors or arrays given to `vaekit.fit` (x_train, x_val, y_train, y_val; None where not
    given), as given: what tells a resume on other data from one on the same (a changed seed, which draws the
    validation split, is the seed's own refusal, not the data's)."""
    h = hashlib.sha256()
    for i, a in enumerate(given):
        if a is None:
            continue
        t = torch.as_tensor(a).detach().cpu()
        t = t.float() if t.dtype == torch.bfloat16 else t  # NumPy has no bfloat16
        h.update(f"{i}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


@contextlib.contextmanager
def epoch_lines(progress: bool):
    """With `progress`, the CLI's lines (the run's summary, then each epoch's training and validation ELBO) on
    stderr for a Python caller whose logging is not set up (Python shows only warnings then); a caller who
    configured logging keeps its own handlers."""
    logger = logging.getLogger("vaekit")
    if not progress or logging.getLogger().handlers or logger.handlers:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)

