"""Configuration as frozen dataclasses: defaults < config file (TOML/JSON) < command-line flags.

Three sections, `[model]`, `[data]`, `[train]`. A setting of the run as a whole is a field here, declared
once with its help and range (`setting`). A part of the model or the objective is a *slot* (`slot`): a
`Choice` of a registered part with the settings that part declares (`parts.registry`), written as a table:

    [model.prior]
    name = "vampprior"
    components = 500

    [train.objective]
    name = "factorvae"
    gamma = 40

A run's `config.json` holds the resolved `Config` (every setting of every chosen part) plus versions;
`Config.from_dict` reads it back, refusing unknown keys (naming the closest) and values of the wrong
type or range.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from ..data import DATASETS
from ..data.tables import KINDS, Schema
from ..errors import VaekitError
from ..evaluation.estimates import MAX_IMPORTANCE_SAMPLES
from ..objectives import OBJECTIVES
from ..parts.hierarchical import INFERENCE
from ..parts.likelihoods import LIKELIHOODS
from ..parts.modules import MAX_CONDITION_CLASSES
from ..parts.networks import ACTIVATIONS, ARCHITECTURES
from ..parts.posteriors import POSTERIORS
from ..parts.priors import PRIORS
from ..parts.registry import MAX_COUNT, Choice, Declared, Registry, Setting, closest, differing
from ..rng import MAX_SEED
from .plugins import source_of

__all__ = ["MAX_COUNT", "MAX_SEED", "Config", "DataConfig", "ModelConfig", "TrainConfig"]


def setting(default: Any, help: str, *, flag: str | None = None, resumable: bool = False, **limits: Any) -> Any:
    """A field of the run: its default, --help line and range (`above`, `at_least`, `at_most`, `choices`:
    as `Setting` takes them); `flag` overrides the flag (default --field-name; "" for none);
    `resumable`: a `--resume` may change it (else the run's saved value stands, and another is refused)."""
    meta = {"setting": Setting(help, flag=flag, **limits), "resumable": resumable}
    return field(default=default, metadata=meta)


def slot(default: str, help: str, registry: Registry) -> Any:
    """A field that chooses a registered part by name, with that part's own settings (a `Choice`)."""
    return field(default=registry.choose(default), metadata={"setting": Setting(help), "registry": registry,
                                                             "resumable": False})


class Slots:
    """A section whose slots may be given as a name or a table (`TrainConfig(objective={"name": "iwae", "k": 5})`):
    each becomes its `Choice`, every setting of the part resolved."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            registry = f.metadata.get("registry")
            value = getattr(self, f.name)
            if registry is not None and not isinstance(value, Choice):
                object.__setattr__(self, f.name, registry.choose(value, f"[{f.name}]"))


@dataclass(frozen=True)
class ModelConfig(Slots):
    """[model]: the VAE's shape and its parts."""

    data_shape: tuple[int, ...] = setting((), "filled from the data: (C, H, W) for images, (D,) otherwise", flag="",
                                          above=0)
    latent_dim: tuple[int, ...] = setting((20,), "k, the dimension of z; repeat for stochastic layers z₁, z₂, … "
                                          "(--latent-dim 100 --latent-dim 50: Burda et al.'s two-layer VAE)", above=0)
    hidden: tuple[int, ...] = setting((400,), "encoder hidden layer size; repeat for more layers (none: linear maps)",
                                      above=0)
    decoder_hidden: tuple[int, ...] | None = setting(None, "decoder hidden sizes (default: --hidden mirrored)",
                                                     above=0)
    activation: str = setting("relu", "nonlinearity between layers", choices=tuple(ACTIVATIONS))
    arch: Choice = slot("mlp", "encoder and decoder networks", ARCHITECTURES)  # noqa: RUF009 - a Choice is immutable
    likelihood: Choice = slot("bernoulli", "p(x|z)", LIKELIHOODS)  # noqa: RUF009 - a Choice is immutable
    posterior: Choice = slot("diagonal", "the family of Q(z|x)", POSTERIORS)  # noqa: RUF009 - a Choice is immutable
    layer_hidden: tuple[int, ...] | None = setting(None, "two or more --latent-dim: hidden sizes of the networks "
                                                   "between stochastic layers; none: two of twice the upper layer's size",
                                                   above=0)
    inference: str = setting("bottom-up", "two or more --latent-dim: Q drawn bottom-up, Q(z₁|x)Q(z₂|z₁)… (Burda "
                             "et al. 2016), or top-down, ladder: Q(z_l|z_l+1, x) ∝ p(z_l|z_l+1)·N(μ̂_l(x), σ̂_l²) "
                             "(Sønderby et al. 2016); ladder-unshared: the same with Q's top-down steps its own networks, not p's "
                             "(the authors' code); top-down: a deep VAE whose groups hang on one path shared by "
                             "p(z_l|z_>l) and Q(z_l|z_>l, x) (NVAE, VDVAE; width: the last --hidden); hvae: "
                             "Q(z₂|x)Q(z₁|x, z₂), p(x|z₁, z₂) (Tomczak & Welling 2018)",
                             choices=tuple(INFERENCE))
    prior: Choice = slot("standard", "p(z) (of the top layer z_L when there are several)", PRIORS)  # noqa: RUF009 - a Choice is immutable
    condition: str = setting("none", "label: a conditional VAE (Sohn et al. 2015): Q(z|x, y) and p(x|z, y) see the "
                             "data's labels y (one-hot); --prior label adds p(z|y)", choices=("none", "label"))
    condition_classes: int = setting(0, "filled from the data: the number of label classes", flag="", at_least=0,
                                     at_most=MAX_CONDITION_CLASSES)
    columns: Schema | None = setting(None, "filled from the data: a table's columns, their kinds, levels and training "  # noqa: RUF009 - its default is None
                                     "statistics (--likelihood mixed)", flag="")
    shared_encoder: bool = setting(True, "one encoder trunk for all of Q's parameters; --no-shared-encoder "
                                   "(or --separate-encoder): separate networks q(x; φ), v(x; ψ)")
    init: str = setting("default", "weights: default (PyTorch) or glorot (Glorot-uniform, zero biases: the "
                        "IWAE paper's)", choices=("default", "glorot"))
    built_in_python: bool = setting(False, "the networks were built in Python (vaekit.fit/save): the weights load "
                                    "only into the same model, rebuilt by the user (vaekit.load(DIR, model=…))", flag="")
    plugins: tuple[str, ...] = setting((), "plugin files or modules that define this run's registered parts "
                                       "(recorded; never imported because a run directory names them)", flag="")
    python_parts: tuple[str, ...] = setting((), "built in Python: the class of each part (role: module.Class), "
                                            "recorded to say what the model is; never imported", flag="")
    unknown: tuple[str, ...] = setting((), "built in Python: the settings of this config.json that do not describe "
                                       "the run (their values are the defaults), e.g. model.hidden", flag="")

    @property
    def data_dim(self) -> int:
        return math.prod(self.data_shape)

    @property
    def conditional(self) -> bool:
        """Whether the VAE is conditioned on the data's labels (Sohn et al. 2015): the one test of it."""
        return self.condition != "none"

    @property
    def latent_size(self) -> int:
        """The dimension of z = [z₁, …, z_L]: Σ latent_dim."""
        return sum(self.latent_dim)


@dataclass(frozen=True)
class DataConfig:
    """[data]: which examples, and how they are prepared."""

    dataset: str = setting("digits", "digits, wine (embedded), shapes2d (rendered), mnist, fashion-mnist, binarized-mnist, "
                           "frey-faces, or a path: .npy .npz .csv or a folder of images")
    binarize: str = setting("auto", "for a Bernoulli likelihood: dynamic (a fresh draw per use), static (one seeded "
                            "draw) or none; auto: dynamic for binary likelihoods, none otherwise",
                            choices=("auto", "dynamic", "static", "none"))
    standardize: bool = setting(False, "real-valued data: subtract the training mean and divide by the training "
                                "standard deviation per dimension (saved in the run, undone for samples)")
    split_seed: int = setting(0, "seeds the validation (and test) split drawn from data that has none", at_least=0,
                              at_most=MAX_SEED)
    val_size: int | None = setting(None, "validation examples held out of train (default: 200 digits, 10000 "
                                   "MNIST-like, 10% otherwise)", at_least=0)
    data_dir: str | None = setting(None, "root of mnist/, fashion-mnist/, binarized_mnist/, frey_faces/ "
                                   "(else $VAEKIT_DATA, else ~/.cache/vaekit)", resumable=True)
    mmap: bool = setting(False, ".npy only: memory-map instead of reading into RAM (data larger than memory)")
    scale: float | None = setting(None, "user files: divide the stored values by this (default: 255 for uint8 arrays "
                                  "and 8-bit images, 65535 for 16-bit images, 1 otherwise, CSV included)", above=0)
    schema: str | None = setting(None, "a table (--likelihood mixed): a JSON file of column kinds, {name: kind} or "
                                 "{name: {\"kind\": …, \"levels\": [...]}}, over the inferred ones")
    column_types: tuple[str, ...] = setting((), f"a table: NAME=KIND, a column's kind over the inferred one; repeat "
                                            f"(kinds: {', '.join(KINDS)})", flag="--column-type")
    digest: str = setting("", "the sha256 of the data a run trained on: the file's (or the folder's), or the tensors "
                          "given to vaekit.fit (a resume on other data is refused)", flag="")
    size: int | None = setting(None, "the bytes that sha256 covers (a folder's: their sum): data of another size "
                               "changed, which is told without reading them; recorded on a resume where a run lacks it", at_least=0,
                               at_most=2**63 - 1, flag="", resumable=True)


@dataclass(frozen=True)
class TrainConfig(Slots):
    """[train]: the objective and how it is optimized."""

    epochs: int = setting(50, "passes over the training split (total, counting those already trained)", resumable=True,
                          above=0)
    batch_size: int = setting(128, "examples per step (per process under torchrun)", above=0)
    lr: float = setting(1e-3, "Adam's learning rate", resumable=True, above=0)
    lr_schedule: str = setting("constant", "constant: lr throughout; cosine: lr·½(1 + cos(π e/epochs)) in epoch e = 0, "
                               "1, … (a step per epoch, to 0 at the end; the recipes' choice)", resumable=True,
                               choices=("constant", "cosine"))
    adam_eps: float = setting(1e-8, "Adam's ε (the IWAE paper uses 1e-4)", above=0, at_most=1.0)
    weight_decay: float = setting(0.0, "decoupled weight decay (AdamW: each step also shrinks every weight by "
                                  "lr·this; 0: none, Adam; VDVAE: 0.01)", at_least=0, at_most=10)
    objective: Choice = slot("elbo", "what training maximizes", OBJECTIVES)  # noqa: RUF009 - a Choice is immutable
    seed: int = setting(0, "seeds initialisation, the epochs' order and the training noise", at_least=0, at_most=MAX_SEED)
    init_from: str | None = setting(None, "start a new run from this run's weights, its settings the defaults (give "
                                    "what changes: a fine-tune with --objective iwae); the model must stay the same")
    patience: int = setting(0, "stop once the validation ELBO has not improved for N epochs, not counting the KL "
                            "warm-up's, and keep the best epoch's weights in model.safetensors (0: train every epoch; "
                            "Tomczak & Welling: 50)", resumable=True, at_least=0)
    eval_k: int = setting(100, "default k of `vaekit evaluate` for this run", resumable=True, above=0,
                          at_most=MAX_IMPORTANCE_SAMPLES)
    checkpoint_every: int = setting(0, "also checkpoint every N steps (0: at the end of each epoch only)",
                                    resumable=True, at_least=0)
    skip_nonfinite: int = setting(0, "skip up to N batches with a NaN/Inf loss or gradient (0: stop at the first)",
                                  resumable=True, at_least=0)
    precision: str = setting("fp32", "bf16: autocast matmuls (log-densities stay float32)", choices=("fp32", "bf16"))
    compile: bool = setting(False, "torch.compile the objective (falls back to eager, with a warning)", resumable=True)
    cuda_graphs: bool = setting(False, "CUDA, one process: capture the whole training step once and replay it",
                                resumable=True)
    grad_clip: float = setting(0.0, "rescale the gradient to at most this global norm (0: never; VDVAE: 200)",
                               resumable=True, at_least=0)
    grad_skip: float = setting(0.0, "take no update whose gradient norm exceeds this (0: never; VDVAE: 400); "
                               "counted, not an error", resumable=True, at_least=0)
    ema: float = setting(0.0, "decay of an exponential moving average of the weights, which evaluation and "
                         "sampling use (0: none; VDVAE: 0.9999)", at_least=0, at_most=0.99999)
    spectral_reg: float = setting(0.0, "add λ·Σ σ_max(W) over the model's linear and convolutional layers to the "
                                  "loss (NVAE's spectral regularization; 0: none; NVAE: 1e-2 to 1e-1)", at_least=0,
                                  at_most=1e3)


SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Config:
    """A run's whole configuration: `Config.from_dict(d)` checks and resolves a nested dict (a config file,
    a config.json); `to_dict()` is what config.json holds; `replace(train={"epochs": 3})` a changed copy."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return {name: {f.name: _plain(getattr(getattr(self, name), f.name)) for f in dataclasses.fields(cls)}
                for name, cls in SECTIONS.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> Config:
        check_keys(d, set(SECTIONS), source)
        cfg = cls(**{name: _section(sub, d.get(name, {}), f"{source}: [{name}]") for name, sub in SECTIONS.items()})
        validate(cfg, source)
        return cfg

    @classmethod
    def checked(cls, cfg: Any, source: str, hint: str = "") -> Config:
        """`cfg` held to what `from_dict` checks, by a round trip (`Config(train=TrainConfig(epochs=-1))` is not)."""
        wrong = next((f"Config.{n} = {getattr(cfg, n)!r:.40} (a {c.__name__} is needed)" for n, c in SECTIONS.items()
                      if not isinstance(getattr(cfg, n), c)), "") if isinstance(cfg, Config) else type(cfg).__name__
        if wrong:
            raise VaekitError(f"{source}: takes a vaekit.Config, got {wrong}{hint}")
        return cls.from_dict(cfg.to_dict(), source)

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some fields of some sections replaced: `cfg.replace(train={"epochs": 3})`; a part's
        settings by its table: `cfg.replace(train={"objective": {"name": "iwae", "k": 5}})`."""
        return Config.from_dict(merge(self.to_dict(), sections))


def _plain(value: Any) -> Any:
    return value.as_dict() if isinstance(value, Choice) else value.as_plain() if hasattr(value, "as_plain") else value


@functools.cache
def declared(cls: type) -> dict[str, Declared]:
    """The fields of a section as `Declared` settings (a slot's `type` is its Choice); read once per class."""
    hints = typing.get_type_hints(cls)
    return {f.name: Declared(f.name, hints[f.name], f.default, f.metadata["setting"]) for f in dataclasses.fields(cls)}


def settings():
    """(section, dataclass field) for every setting, in order: what the CLI's flags are made from."""
    for name, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield name, f


def slots():
    """(section, field name, registry) of every slot."""
    for section, f in settings():
        if "registry" in f.metadata:
            yield section, f.name, f.metadata["registry"]


def slot_registry(section: str, name: str) -> Registry | None:
    """The registry of the slot `name` of `section`, or None where that field is no slot."""
    return next((r for s, n, r in slots() if (s, n) == (section, name)), None)


def check_keys(d: Any, known: set[str], where: str) -> None:
    if not isinstance(d, dict):
        raise VaekitError(f"{where}: expected a table of settings, got {type(d).__name__}")
    for key in d:
        if key not in known:
            moved = MOVED.get((where.rsplit("[", 1)[-1].rstrip("]"), key))
            if moved:
                raise VaekitError(f"{where}: {key} is a setting of the {moved[0]} since vaekit 0.3: write it in "
                                  f"its table, [{where.rsplit('[', 1)[-1].rstrip(']')}.{moved[0]}] {moved[1]} = …")
            raise VaekitError(f"{where}: unknown key {key!r}{closest(key, known)}")


def _section(cls: type, d: Any, where: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    check_keys(d, set(fields), where)
    values = {}
    for name, value in d.items():
        registry = fields[name].metadata.get("registry")
        if registry is not None:  # "source: [model]" → "source: [model.prior]", its table's name
            values[name] = registry.choose(value, f"{where[:-1]}.{name}]")
        else:
            values[name] = declared(cls)[name].check(value, f"{where} {name}")
    return cls(**values)


def validate(cfg: Config, source: str = "config") -> None:
    """The checks that span fields (each field's own range is checked as it is read)."""
    if not cfg.model.latent_dim:
        raise VaekitError(f"{source}: [model] latent_dim needs at least one size")
    if not cfg.data.dataset.strip():  # '' would be the current folder, read as a folder of images
        raise VaekitError(f"{source}: [data] dataset is empty; name a dataset ({', '.join(DATASETS)}) or a file")
    if cfg.train.init_from is not None and not cfg.train.init_from.strip():  # an unset shell variable: not a new model
        raise VaekitError(f"{source}: [train] init_from is empty; name the run directory to start from (or leave it out)")
    if cfg.model.conditional and cfg.train.cuda_graphs:
        raise VaekitError(f"{source}: [model] condition = {cfg.model.condition!r} takes no cuda_graphs")
    if dict(cfg.model.arch.settings).get("norm") == "batch" and cfg.train.batch_size < 2:
        raise VaekitError(f"{source}: [train] batch_size 1 with batch normalization ([model] arch norm = batch): one "
                          "example has no variance to normalize by; use batches of 2 or more")


def merge(base: dict[str, dict[str, Any]], update: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`update`'s sections over `base`'s. A slot given by another part's name starts from that part's
    defaults; given without a name (settings only), it keeps the part it had and changes those settings."""
    out = {name: dict(values) for name, values in base.items()}
    for section, values in update.items():
        if not isinstance(values, dict) or section not in out:
            out[section] = values  # refused with its name by from_dict
            continue
        for key, value in values.items():
            old = out[section].get(key)
            if slot_registry(section, key) is not None and isinstance(old, dict):
                new = {"name": value} if isinstance(value, str) else _plain(value)
                if isinstance(new, dict) and new.get("name", old["name"]) == old["name"]:
                    new = {**old, **new}
                out[section][key] = new
            else:
                out[section][key] = value
    return out


# 0.2's flat keys, now settings of a part: (section, key) → (slot, setting).
MOVED = {
    ("model", "sigma"): ("likelihood", "sigma"), ("model", "prior_components"): ("prior", "components"),
    ("model", "flow_steps"): ("posterior", "flow_steps"),
    **{("train", k): ("objective", k) for k in ("beta", "kl_warmup_epochs", "num_samples", "kl", "estimator", "dreg",
                                              "tc_estimator", "gamma", "discriminator_hidden", "capacity_max",
                                              "capacity_epochs")},
    ("train", "train_k"): ("objective", "k"), ("train", "dip_lambda_od"): ("objective", "lambda_od"),
    ("train", "dip_lambda_d"): ("objective", "lambda_d"),
}


def resume_config(saved: Config, cfg: Config, given: Collection[tuple[str, str]] | None = None, where: str = "",
                  words: tuple[str, str] = ("--resume", "--out")) -> Config:
    """The config a `--resume` trains with: the run's saved one, with the settings in `given` (section,
    name) taken from `cfg` where they may change (`resumable`), and a one-line refusal where one that
    may not (the model, its parts, the objective, the data, the batch size, the seed, …) differs.
    `given=None`: every setting of `cfg` that differs from the default counts as given (a Python caller's); a dict
    names where each came from (a --config file), which a refusal says;
    `words`: how the caller says resume and out (the CLI's flags, or `vaekit.fit`'s keywords)."""
    default = Config()
    updates: dict[str, dict[str, Any]] = {name: {} for name in SECTIONS}
    for section, f in settings():
        new, old = getattr(getattr(cfg, section), f.name), getattr(getattr(saved, section), f.name)
        is_given = (section, f.name) in given if given is not None else new != getattr(getattr(default, section), f.name)
        if not is_given or new == old:
            continue
        if not f.metadata["resumable"]:
            what, was, now = differing(section, f.name, _plain(old), _plain(new))  # a part: the setting inside it
            was, now = (list(v) if isinstance(v, tuple) else v for v in (was, now))  # as a file writes it: [3]
            source = given.get((section, f.name)) if isinstance(given, dict) else None
            raise VaekitError(f"{where}{what} = {now!r}{f' (in {source})' if source else ''} differs from the run's "
                              f"{was!r}, and it cannot change on {words[0]}; train a new run into another {words[1]}")
        updates[section][f.name] = new
    return Config.from_dict(merge(saved.to_dict(), updates), source="resumed config")


def plugins_needed(cfg: Config) -> tuple[str, ...]:
    """The plugins (as `plugins.source_of` records them) whose registered parts `cfg` names."""
    needed = set()
    for section, name, registry in slots():
        entry = registry.entry(getattr(getattr(cfg, section), name).name)
        if not entry.builtin:
            needed.add(source_of(entry.module))
    return tuple(sorted(needed))
