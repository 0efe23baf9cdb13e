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

from ..objectives.disentangling import TC_ESTIMATORS
from ..errors import VaekitError
from ..parts.hierarchical import INFERENCE
from ..parts.likelihoods import LIKELIHOODS
from ..objectives import OBJECTIVES
from ..parts.networks import ACTIVATIONS, ARCHITECTURES
from ..objectives.estimators import ESTIMATORS, KL_MODES
from .plugins import source_of
from ..parts.posteriors import POSTERIORS
from ..parts.priors import PRIORS
from ..parts.registry import Registry


def setting(default: Any, help: str, choices: Any = None, flag: str | None = None, resumable: bool = False) -> Any:
    """A config field with its --help line and, where it names a registered part, its registry
    (or a tuple) of choices; `flag` overrides the command-line flag (default: --field-name);
    `resumable`: a `--resume` may change it (else the run's saved value stands, and a different one is refused)."""
    meta = {"help": help, "choices": choices, "flag": flag, "resumable": resumable}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ModelConfig:
    data_shape: tuple[int, ...] = setting((), "filled from the data: (C, H, W) for images, (D,) otherwise", flag="")
    latent_dim: tuple[int, ...] = setting((20,), "k, the dimension of z; repeat for stochastic layers z₁, z₂, … "
                                          "(--latent-dim 100 --latent-dim 50: Burda et al.'s two-layer VAE)")
    hidden: tuple[int, ...] = setting((400,), "encoder hidden layer size; repeat for more layers (none: linear maps)")
    decoder_hidden: tuple[int, ...] | None = setting(None, "decoder hidden sizes (default: --hidden mirrored)")
    activation: str = setting("relu", "nonlinearity between layers", tuple(ACTIVATIONS))
    arch: str = setting("mlp", "encoder and decoder networks", ARCHITECTURES)
    likelihood: str = setting("bernoulli", "p(x|z)", LIKELIHOODS)
    sigma: float = setting(0.1, "σ of the known-σ Gaussian likelihood (initial σ when learned)")
    posterior: str = setting("diagonal", "the family of Q(z|x)", POSTERIORS)
    flow_steps: int = setting(2, "T, the inverse autoregressive flow steps of --posterior iaf")
    layer_hidden: tuple[int, ...] | None = setting(None, "two or more --latent-dim: hidden sizes of the networks "
                                                   "between stochastic layers; none: two of twice the upper layer's size")
    inference: str = setting("bottom-up", "two or more --latent-dim: Q drawn bottom-up, Q(z₁|x)Q(z₂|z₁)… (Burda "
                             "et al. 2016), or top-down, ladder: Q(z_l|z_l+1, x) ∝ p(z_l|z_l+1)·N(μ̂_l(x), σ̂_l²) "
                             "(Sønderby et al. 2016)", tuple(INFERENCE))
    prior: str = setting("standard", "p(z) (of the top layer z_L when there are several)", PRIORS)
    prior_components: int = setting(10, "components K of a mixture prior (mog: Gaussians; vampprior: pseudo-inputs)")
    condition: str = setting("none", "label: a conditional VAE (Sohn et al. 2015): Q(z|x, y) and p(x|z, y) see the "
                             "data's labels y (one-hot); --prior label adds p(z|y)", ("none", "label"))
    condition_classes: int = setting(0, "filled from the data: the number of label classes", flag="")
    shared_encoder: bool = setting(True, "one encoder trunk for all of Q's parameters; --no-shared-encoder "
                                   "(or --separate-encoder): separate networks q(x; φ), v(x; ψ)")
    init: str = setting("default", "weights: default (PyTorch) or glorot (Glorot-uniform, zero biases: the "
                        "IWAE paper's)", ("default", "glorot"))
    built_in_python: bool = setting(False, "the networks were built in Python (vaekit.fit/save): the weights load "
                                    "only into the same model, rebuilt by the user (vaekit.load(DIR, model=…))", flag="")
    plugins: tuple[str, ...] = setting((), "plugin files or modules that define this run's registered parts "
                                       "(recorded; never imported because a run directory names them)", flag="")

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)

    @property
    def latent_size(self) -> int:
        """The dimension of z = [z₁, …, z_L]: Σ latent_dim."""
        return sum(self.latent_dim)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = setting("digits", "digits, wine (embedded), shapes2d (rendered), mnist, fashion-mnist, binarized-mnist, frey-faces, "
                           "or a path: .npy .npz .csv or a folder of images")
    binarize: str = setting("auto", "for a Bernoulli likelihood: dynamic (a fresh draw per use), static (one seeded "
                            "draw) or none; auto: dynamic for binary likelihoods, none otherwise",
                            ("auto", "dynamic", "static", "none"))
    standardize: bool = setting(False, "real-valued data: subtract the training mean and divide by the training "
                                "standard deviation per dimension (saved in the run, undone for samples)")
    split_seed: int = setting(0, "seeds the validation (and test) split drawn from data that has none")
    val_size: int | None = setting(None, "validation examples held out of train (default: 200 digits, 10000 "
                                   "MNIST-like, 10%% otherwise)")
    data_dir: str | None = setting(None, "root of mnist/, fashion-mnist/, binarized_mnist/, frey_faces/ "
                                   "(else $VAEKIT_DATA, else ~/.cache/vaekit)", resumable=True)
    mmap: bool = setting(False, ".npy only: memory-map instead of reading into RAM (data larger than memory)")
    scale: float | None = setting(None, "user files: divide the stored values by this (default: 255 for uint8 arrays "
                                  "and 8-bit images, 65535 for 16-bit images, 1 otherwise, CSV included)")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = setting(50, "passes over the training split (total, counting those already trained)", resumable=True)
    batch_size: int = setting(128, "examples per step (per process under torchrun)")
    lr: float = setting(1e-3, "Adam's learning rate", resumable=True)
    adam_eps: float = setting(1e-8, "Adam's ε (the IWAE paper uses 1e-4)")
    objective: str = setting("elbo", "what training maximizes", OBJECTIVES)
    beta: float = setting(1.0, "KL weight in the training objective only; the reported ELBO is β = 1")
    kl_warmup_epochs: float = setting(0.0, "β ramps linearly from 0 to --beta over this many epochs")
    num_samples: int = setting(1, "Monte Carlo samples of z per example in the training ELBO")
    kl: str = setting("auto", "KL term: auto (closed form where it exists, else Monte Carlo), analytic, mc",
                      KL_MODES)
    estimator: str = setting("reparameterization", "gradient estimator of the ELBO", ESTIMATORS)
    train_k: int = setting(1, "importance samples per example for --objective iwae")
    dreg: bool = setting(False, "--objective iwae: doubly reparameterized encoder gradients (Tucker et al. 2018)")
    # Chen et al. 2018 train with MWS; MSS is their appendix's lower-bias alternative
    tc_estimator: str = setting("mws", "--objective beta-tcvae: log q(z) over the minibatch by minibatch-weighted "
                                "(mws) or minibatch-stratified (mss) sampling (Chen et al. 2018)", TC_ESTIMATORS)
    # λ_od = 10: the middle of Locatello et al. (2019)'s sweep 1-50 of Kumar et al.'s weight
    dip_lambda_od: float = setting(10.0, "--objective dip-vae-1|2: λ_od, weight of Σ_{i≠j} C_ij² (Kumar et al. 2018)")
    dip_lambda_d: float | None = setting(None, "--objective dip-vae-1|2: λ_d, weight of Σ_i (C_ii − 1)²; none: "
                                         "10·λ_od for dip-vae-1, λ_od for dip-vae-2 (Kumar et al. 2018)")
    # Burgess et al. 2018 use γ = 1000 on dSprites; Adam's steps do not depend on the loss's scale, and γ
    # only has to exceed what a nat of KL buys in reconstruction (about 1 near the ELBO's optimum)
    gamma: float | None = setting(None, "--objective capacity: γ, weight of |KL − C| (Burgess et al. 2018); "
                                  "--objective factorvae: γ, weight of the TC (Kim & Mnih 2018); none: 1000 for "
                                  "capacity, 40 for factorvae")
    discriminator_hidden: tuple[int, ...] = setting((1000,) * 6, "--objective factorvae: the discriminator's hidden "
                                                    "sizes (Kim & Mnih 2018: six of 1000)")
    capacity_max: float = setting(25.0, "--objective capacity: C_max, the KL target in nats that C rises to "
                                  "(25: Burgess et al.'s dSprites)")
    capacity_epochs: float = setting(25.0, "--objective capacity: C rises linearly from 0 to C_max over this many "
                                     "epochs (0: C_max from the start)")
    seed: int = setting(0, "seeds initialisation, the epochs' order and the training noise")
    eval_k: int = setting(100, "default k of `vaekit evaluate` for this run", resumable=True)
    checkpoint_every: int = setting(0, "also checkpoint every N steps (0: at the end of each epoch only)", resumable=True)
    skip_nonfinite: int = setting(0, "skip up to N batches with a NaN/Inf loss or gradient (0: stop at the first)",
                                  resumable=True)
    precision: str = setting("fp32", "bf16: autocast matmuls (log-densities stay float32)", ("fp32", "bf16"))
    compile: bool = setting(False, "torch.compile the objective (falls back to eager, with a warning)", resumable=True)
    cuda_graphs: bool = setting(False, "CUDA, one process: capture the whole training step once and replay it",
                                resumable=True)


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
        item = args[0]
        if isinstance(value, int) and item is int and not isinstance(value, bool):
            value = [value]  # one size where a list of sizes goes: `latent_dim = 20`
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)
        if not ok:
            kind = "integers" if item is int else "strings"
            raise VaekitError(f"{where}: expected a list of {kind}, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint is int and isinstance(value, bool)):
        raise VaekitError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


_POSITIVE = {
    ("model", "latent_dim"), ("model", "sigma"), ("model", "prior_components"), ("model", "flow_steps"),
    ("train", "epochs"), ("train", "batch_size"), ("train", "lr"), ("train", "adam_eps"), ("train", "num_samples"), ("train", "eval_k"), ("train", "train_k"),
}
MAX_COUNT = 2**40  # sizes and counts: beyond any memory, still far from an integer overflow in torch
MAX_SEED = 2**63 - 1  # what torch.manual_seed and numpy's generators take
_NON_NEGATIVE = {("train", "seed"), ("data", "split_seed"), ("train", "beta"), ("train", "kl_warmup_epochs"), ("train", "checkpoint_every"), ("train", "skip_nonfinite"),
                 ("train", "dip_lambda_od"), ("train", "capacity_max"), ("train", "capacity_epochs")}
_DIP = ("dip-vae-1", "dip-vae-2")
# Settings that only some built-in objectives read: elsewhere a value other than the default is refused
# (a plugin's objective may read any of them).
APPLIES_TO = {
    "beta": ("elbo", "beta-tcvae"), "kl_warmup_epochs": ("elbo", "beta-tcvae"),
    "estimator": ("elbo", *_DIP), "dreg": ("iwae",), "tc_estimator": ("beta-tcvae",),
    "dip_lambda_od": _DIP, "dip_lambda_d": _DIP,
    "gamma": ("capacity", "factorvae"), "discriminator_hidden": ("factorvae",), "capacity_max": ("capacity",), "capacity_epochs": ("capacity",),
}


def validate(cfg: Config, source: str = "config") -> None:
    """Range and choice checks; the message names the field and the value."""
    for sec, f in settings():
        choices = f.metadata.get("choices")
        names = choices.names() if isinstance(choices, Registry) else choices
        v = getattr(getattr(cfg, sec), f.name)
        if names is not None and v not in names:
            raise VaekitError(f"{source}: [{sec}] {f.name} = {v!r} is not one of {', '.join(names)}")
    for sec, f in settings():
        v = getattr(getattr(cfg, sec), f.name)
        for item in (v if isinstance(v, tuple) else (v,)):
            limit = MAX_SEED if f.name.endswith("seed") else MAX_COUNT
            if isinstance(item, int) and not isinstance(item, bool) and not -limit <= item <= limit:
                raise VaekitError(f"{source}: [{sec}] {f.name} = {item} is out of range (at most {limit})")
    for sec, name in _POSITIVE:
        v = getattr(getattr(cfg, sec), name)
        for item in v if isinstance(v, tuple) else (v,):
            if not (item > 0 and math.isfinite(item)):
                raise VaekitError(f"{source}: [{sec}] {name} must be > 0, got {item!r}")
    if not cfg.model.latent_dim:
        raise VaekitError(f"{source}: [model] latent_dim needs at least one size")
    for sec, name in _NON_NEGATIVE:
        v = getattr(getattr(cfg, sec), name)
        if not (v >= 0 and math.isfinite(v)):
            raise VaekitError(f"{source}: [{sec}] {name} must be >= 0, got {v!r}")
    t = cfg.train
    for name in ("dip_lambda_d", "gamma"):  # none: the objective's own default
        v = getattr(t, name)
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise VaekitError(f"{source}: [train] {name} must be >= 0, got {v!r}")
    _check_objective_settings(t, source)
    m = cfg.model
    if m.condition != "none" and t.cuda_graphs:
        raise VaekitError(f"{source}: [model] condition = {m.condition!r} takes no cuda_graphs")
    if cfg.data.scale is not None and not (cfg.data.scale > 0 and math.isfinite(cfg.data.scale)):
        raise VaekitError(f"{source}: [data] scale must be > 0, got {cfg.data.scale!r}")
    if cfg.data.val_size is not None and cfg.data.val_size < 0:
        raise VaekitError(f"{source}: [data] val_size must be >= 0, got {cfg.data.val_size}")
    for sec, name in (("model", "hidden"), ("model", "decoder_hidden"), ("model", "layer_hidden"),
                      ("train", "discriminator_hidden")):
        sizes = getattr(getattr(cfg, sec), name) or ()
        if any(h <= 0 for h in sizes):
            raise VaekitError(f"{source}: [{sec}] {name} sizes must be > 0, got {list(sizes)}")


def _check_objective_settings(t: TrainConfig, source: str) -> None:
    """Refuse a setting that the chosen built-in objective does not read (`APPLIES_TO`), in one line."""
    if not OBJECTIVES.entry(t.objective).builtin:
        return
    default = TrainConfig()
    for name, objectives in APPLIES_TO.items():
        v = getattr(t, name)
        if v != getattr(default, name) and t.objective not in objectives:
            which = " or ".join(f"'{o}'" for o in objectives)
            raise VaekitError(f"{source}: [train] {name} = {v!r} applies to objective {which}, not '{t.objective}'")


def resume_config(saved: Config, cfg: Config, given: set[tuple[str, str]] | None = None, where: str = "") -> Config:
    """The config a `--resume` trains with: the run's saved one, with the settings in `given` (section,
    name) taken from `cfg` where they may change (`resumable`), and a one-line refusal where one that
    may not (the model, the data, the batch size, the seed, …) differs. `given=None`: every setting
    of `cfg` that differs from the default counts as given (a Python caller's config)."""
    default = Config()
    updates: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for section, f in settings():
        new, old = getattr(getattr(cfg, section), f.name), getattr(getattr(saved, section), f.name)
        is_given = (section, f.name) in given if given is not None else new != getattr(getattr(default, section), f.name)
        if not is_given or new == old:
            continue
        if not f.metadata["resumable"]:
            raise VaekitError(f"{where}[{section}] {f.name} = {new!r} differs from the run's {old!r}, and it cannot "
                              "change on --resume; train a new run into another --out")
        updates[section][f.name] = new
    return Config.from_dict({k: {**v, **updates[k]} for k, v in saved.to_dict().items()}, source="resumed config")


def plugins_needed(cfg: Config) -> tuple[str, ...]:
    """The plugins (as `plugins.source_of` records them) whose registered parts `cfg` names."""
    needed = set()
    for section, f in settings():
        registry = f.metadata.get("choices")
        if isinstance(registry, Registry):
            entry = registry.entry(getattr(getattr(cfg, section), f.name))
            if not entry.builtin:
                needed.add(source_of(entry.module))
    return tuple(sorted(needed))


def registry_tables() -> str:
    """The README's table of every built-in registered choice, one row per name (a test keeps them equal)."""
    rows = ["| flag | name | what it is |", "|---|---|---|"]
    for _, f in settings():
        registry = f.metadata.get("choices")
        if isinstance(registry, Registry):
            flag = "--" + f.name.replace("_", "-")
            rows += [f"| `{flag}` | `{e.name}` | {e.help} |" for e in map(registry.entry, registry.names()) if e.builtin]
    return "\n".join(rows) + "\n"


def settings():
    """(section, dataclass field) for every setting, in order: what the CLI's flags are made from."""
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield name, f


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

            d = tomllib.loads(text.decode())
        else:
            d = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise VaekitError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} "
                          f"({'nested too deeply' if isinstance(e, RecursionError) else e})") from None
    if isinstance(d, dict):
        d.pop("versions", None)  # a run's own config.json: the versions that wrote it are not settings
    return d

