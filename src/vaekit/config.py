"""Configuration as frozen dataclasses: defaults < config file (TOML/JSON) < command-line flags.

A run's `config.json` holds the resolved `Config` plus versions; `Config.from_dict` reads it back,
rejecting unknown keys (with a "did you mean") and values of the wrong type or range.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import VaekitError


@dataclass(frozen=True)
class ModelConfig:
    data_shape: tuple[int, ...] = ()  # filled from the data: (C, H, W) for images, (D,) otherwise
    latent_dim: int = 20  # k, the dimension of z
    hidden: tuple[int, ...] = (400,)  # encoder hidden sizes; () gives linear maps
    decoder_hidden: tuple[int, ...] | None = None  # None mirrors `hidden`
    activation: str = "relu"  # relu | tanh | elu | gelu | softplus
    likelihood: str = "bernoulli"  # bernoulli | gaussian | gaussian-learned | gaussian-learned-per-dim
    sigma: float = 0.1  # σ of the known-σ Gaussian (initial σ when learned)
    shared_encoder: bool = True  # one trunk for μ and log σ²; False: separate q(x; φ), v(x; ψ)
    init: str = "default"  # default (PyTorch) | glorot (Glorot-uniform, zero biases: the IWAE paper's)
    arch: str = "mlp"  # mlp | conv (images; the last `hidden` size is the conv nets' dense layer)

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"  # digits | mnist | fashion-mnist | binarized-mnist | PATH (.npy .npz .csv or image folder)
    binarize: str = "dynamic"  # dynamic (fresh Bernoulli draw per use) | static (one seeded draw) | none
    split_seed: int = 0  # seeds the validation (and test) split drawn from data that has none
    val_size: int | None = None  # validation examples taken from train; None: 200 digits, 10000 MNIST-like
    data_dir: str | None = None  # root of mnist/, fashion-mnist/, binarized_mnist/; else $VAEKIT_DATA, else cache
    mmap: bool = False  # .npy only: memory-map instead of reading into RAM (for data larger than memory)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    adam_eps: float = 1e-8  # Adam's ε (the IWAE paper uses 1e-4)
    beta: float = 1.0  # KL weight in the training objective only; the reported ELBO is β = 1
    kl_warmup_epochs: float = 0.0  # β ramps linearly from 0 to `beta` over this many epochs
    num_samples: int = 1  # Monte Carlo samples of z per example in the training ELBO
    kl: str = "auto"  # auto (closed form where it exists) | analytic | mc
    estimator: str = "reparameterization"  # reparameterization | score-function (objective elbo only)
    objective: str = "elbo"  # elbo | iwae (Burda et al. 2016, with k = train_k samples)
    train_k: int = 1  # importance samples per example for objective = iwae
    dreg: bool = False  # iwae: doubly reparameterized encoder gradients (Tucker et al. 2018)
    seed: int = 0
    eval_k: int = 100  # importance samples for the log-likelihood in `vaekit evaluate` defaults
    checkpoint_every: int = 0  # also checkpoint every this many steps (0: at the end of each epoch only)
    skip_nonfinite: int = 0  # skip up to this many batches with a NaN/Inf loss or gradient (0: stop at the first)
    precision: str = "fp32"  # fp32 | bf16 (autocast: matmuls in bfloat16, log-densities and sums in float32)
    compile: bool = False  # torch.compile the objective (falls back to eager, with a warning, where it cannot)
    cuda_graphs: bool = False  # CUDA only, one process: capture the whole step once and replay it


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> Config:
        _check_keys(d, {f.name for f in dataclasses.fields(cls)}, source)
        parts = {name: _section(sub_cls, d.get(name, {}), f"{source}: [{name}]") for name, sub_cls in SECTIONS.items()}
        cfg = cls(**parts)
        validate(cfg, source)
        return cfg

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some fields of some sections replaced: `cfg.replace(train={"epochs": 3})`."""
        merged = self.to_dict()
        for name, updates in sections.items():
            merged[name].update(updates)
        return Config.from_dict(merged)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _check_keys(d: Any, known: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise VaekitError(f"{where}: expected a table of settings, got {type(d).__name__}")
    for key in d:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(sorted(known))}"
            raise VaekitError(f"{where}: unknown key {key!r}{hint}")


def _section(cls, d: Any, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(d, set(fields), where)
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k], f"{where} {k}") for k, v in d.items()})


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a field's type; JSON lists become tuples, ints are accepted as floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        if value is None and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise VaekitError(f"{where}: expected a list of integers, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise VaekitError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


_CHOICES = {
    ("model", "activation"): ("relu", "tanh", "elu", "gelu", "softplus"),
    ("model", "likelihood"): ("bernoulli", "gaussian", "gaussian-learned", "gaussian-learned-per-dim"),
    ("model", "init"): ("default", "glorot"),
    ("model", "arch"): ("mlp", "conv"),
    ("train", "objective"): ("elbo", "iwae"),
    ("data", "binarize"): ("dynamic", "static", "none"),
    ("train", "kl"): ("auto", "analytic", "mc"),
    ("train", "estimator"): ("reparameterization", "score-function"),
    ("train", "precision"): ("fp32", "bf16"),
}
_POSITIVE = {
    ("model", "latent_dim"), ("model", "sigma"), ("train", "epochs"), ("train", "batch_size"),
    ("train", "lr"), ("train", "adam_eps"), ("train", "num_samples"), ("train", "eval_k"), ("train", "train_k"),
}
_NON_NEGATIVE = {("train", "beta"), ("train", "kl_warmup_epochs"), ("train", "checkpoint_every"), ("train", "skip_nonfinite")}


def validate(cfg: Config, source: str = "config") -> None:
    """Range and choice checks; the message names the field and the value."""
    for (sec, name), choices in _CHOICES.items():
        v = getattr(getattr(cfg, sec), name)
        if v not in choices:
            raise VaekitError(f"{source}: [{sec}] {name} = {v!r} is not one of {', '.join(choices)}")
    for sec, name in _POSITIVE:
        v = getattr(getattr(cfg, sec), name)
        if not (v > 0 and math.isfinite(v)):
            raise VaekitError(f"{source}: [{sec}] {name} must be > 0, got {v!r}")
    for sec, name in _NON_NEGATIVE:
        v = getattr(getattr(cfg, sec), name)
        if not (v >= 0 and math.isfinite(v)):
            raise VaekitError(f"{source}: [{sec}] {name} must be >= 0, got {v!r}")
    t = cfg.train
    if t.objective == "iwae" and (t.beta != 1 or t.kl_warmup_epochs or t.estimator != "reparameterization"):
        raise VaekitError(f"{source}: [train] beta, kl_warmup_epochs and estimator apply to objective 'elbo', not 'iwae'")
    if t.dreg and t.objective != "iwae":
        raise VaekitError(f"{source}: [train] dreg = true needs objective = 'iwae'")
    if cfg.data.val_size is not None and cfg.data.val_size < 0:
        raise VaekitError(f"{source}: [data] val_size must be >= 0, got {cfg.data.val_size}")
    for name in ("hidden", "decoder_hidden"):
        sizes = getattr(cfg.model, name) or ()
        if any(h <= 0 for h in sizes):
            raise VaekitError(f"{source}: [model] {name} sizes must be > 0, got {list(sizes)}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config into a dict (checked later by `Config.from_dict`)."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as e:
        raise VaekitError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            return tomllib.loads(text.decode())
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise VaekitError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({e})") from None
