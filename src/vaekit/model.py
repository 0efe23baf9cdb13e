"""A VAE is three parts that return torch distributions: VAE(encoder, decoder, prior).

- encoder: x → Q(z|x), any module returning a `Distribution` with `rsample`/`log_prob`, batch shape
  [B], event shape [k]; `Encoder(net, head)` turns any network's output into one (a posterior head).
- decoder: z → p(x|z), event shape [D]; `Decoder(net, head)` with a likelihood head.
- prior: a module whose `forward()` returns p(z); the VAE owns it, so it may have parameters.

Seed §"Neural Network Parameterization": z ~ N(0, I_k), x|z ~ N(g(z; θ), σ²I) (or Bernoulli(logits=g));
§"Gaussian Q and the Encoder/Decoder": Q_i = N(q(x⁽ⁱ⁾; φ), diag(v(x⁽ⁱ⁾; ψ))²). That composition is
the default of `compose`/`build_model`; every family is a registered part (`parts/`: priors, posteriors,
likelihoods, networks), and nothing here names one.
"""

from __future__ import annotations

import inspect
import itertools
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution

from .data.tables import Schema
from .errors import VaekitError
from .parts.distributions import MAX_TEMPERATURE, mean_of, tempered
from .parts.hierarchical import INFERENCE, HierarchicalPrior, HVAEEncoder, LadderEncoder, TopPath
from .parts.likelihoods import LIKELIHOODS, TableObservation
from .parts.modules import Decoder, Encoder, Labels, Part, examples
from .parts.networks import ARCHITECTURES, Concat, First, check_layer, check_sizes, mlp
from .parts.posteriors import POSTERIORS
from .parts.priors import PRIORS
from .parts.registry import closest
from .parts.topdown import LastState, TopDownEncoder, TopDownPath, TopDownPrior, TopGroup

MAX_DRAWN_VALUES = 1 << 28  # values of x drawn at once (1 GiB of float32): `sample` draws in parts beyond


class Joint:
    """What the objectives, the evaluation and the pictures ask of a model, from three methods a subclass
    gives: `prior()` → p(z), `p_x_given_z(z)` and, for a VAE, `posterior(x)` → Q(z|x). A module (a VAE)
    and a conditional VAE with its labels bound (`Given`) share it."""

    decoder: nn.Module

    def log_joint(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x, z; θ) = log p(z) + log p(x|z; θ): [...]."""
        return self.prior().log_prob(z) + self.p_x_given_z(z).log_prob(x)

    @property
    def latent_dim(self) -> int:
        prior = self.prior
        if getattr(prior, "conditional", False):  # p(z|y) of a VAE not given its labels: its own k
            return int(prior.latent_dim)
        return int(prior().event_shape[-1])

    @property
    def data_dim(self) -> int | None:
        return getattr(self.decoder, "data_dim", None)

    @torch.no_grad()
    def sample(self, n: int, mean: bool = True, temperature: float = 1.0) -> Tensor:
        """n draws from the model, [n, D]: E[x|z] for z ~ p(z) by default (what pictures show);
        `mean=False` draws x ~ p(x|z) too. A prior with batch shape [n] (conditioned on n labels) gives
        one draw each. `temperature` T < 1 draws z with every Gaussian scale of p(z) times T (`tempered`)."""
        if isinstance(n, bool) or not hasattr(n, "__index__") or n < 1:
            raise VaekitError(f"sample: n must be a whole number of draws ≥ 1, got {n!r}")
        n = int(n)
        if n * (self.data_dim or 1) > MAX_DRAWN_VALUES:
            raise VaekitError(f"sample: {n:,} draws of {self.data_dim or 1} values are more than the "
                              f"{MAX_DRAWN_VALUES:,} vaekit draws at once; draw in parts")
        if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or \
                not 0 < float(temperature) <= MAX_TEMPERATURE:
            raise VaekitError(f"sample: temperature must be a number in (0, {MAX_TEMPERATURE:g}], got {temperature!r}")
        temperature = float(temperature)
        p_z = self.prior() if temperature == 1.0 else tempered(self.prior(), temperature)
        p = self.p_x_given_z(p_z.sample() if tuple(p_z.batch_shape) == (n,) else p_z.sample((n,)))
        return p.mean if mean else p.sample()

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """E[x|z], the mean of p(x|z) (probabilities for a Bernoulli, not logits): [..., D]."""
        z = torch.as_tensor(z)
        k = self.latent_dim
        if z.is_meta or z.layout != torch.strided:
            raise VaekitError(f"decode: z must be a dense tensor of values, got a {'meta' if z.is_meta else z.layout} tensor")
        if z.dim() < 2 or z.shape[-1] != k or z.numel() == 0 or z.is_complex() or not bool(torch.isfinite(z).all()):
            shaped = z.dim() >= 2 and z.shape[-1] == k and not z.is_complex()
            raise VaekitError(f"decode: z must be finite latents [N, {k}], got {tuple(z.shape)}"
                              + ("" if not shaped else " (no latents)" if z.numel() == 0 else " holding NaN or Inf"))
        dtype = next((p.dtype for p in self.decoder.parameters() if p.is_floating_point()), torch.get_default_dtype())
        return self.p_x_given_z(z.to(dtype)).mean

    @torch.no_grad()
    def encode(self, x: Tensor, distribution: bool = False) -> Tensor | Distribution:
        """The posterior mean E_Q[z|x], [B, k]; with `distribution=True`, Q(z|x) itself."""
        q_z = self.posterior(examples(self, x))
        return q_z if distribution else mean_of(q_z)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x|z] at z = the posterior mean of Q(z|x): [B, D]."""
        return self.decode(mean_of(self.posterior(examples(self, x))))


class Generative(Joint, nn.Module):
    """p(x, z) = p(z) p(x|z) from `self.prior` and `self.decoder`: what the model and the references share."""

    prior: nn.Module

    def p_x_given_z(self, z: Tensor) -> Distribution:
        """p(x|z; θ) with batch shape z.shape[:-1] and event shape [D]."""
        return self.decoder(z)


class GenerativeModel(Generative):
    """p(z) = N(0, I_k) and p(x|z; θ) from an MLP g(z; θ) (`hidden=()`: linear), without an encoder:
    the half that the references (`evaluation.references`) and `vaekit explain` integrate exactly."""

    def __init__(self, data_dim: int, latent_dim: int, hidden: Sequence[int] = (400,), activation: str = "relu",
                 likelihood: Part = "bernoulli", init: str = "default"):
        super().__init__()
        head = LIKELIHOODS.build(likelihood, data_dim=data_dim)
        net = ARCHITECTURES.build("mlp", role="decoder", in_features=latent_dim, out_features=head.out_features(data_dim),
                                  hidden=tuple(hidden), activation=activation, init=init)
        self.decoder = Decoder(net, head, data_dim)
        self.prior = PRIORS.build("standard", latent_dim=latent_dim)


class VAE(Generative):
    """A variational auto-encoder: `VAE(encoder, decoder, prior)` (see the module docstring).

    `VAE(data_dim=…, latent_dim=…, hidden=…, …)`, the seed's model by keywords, still builds the
    default composition (`compose`); `vaekit.build_model(cfg)` builds one from a config.

    A conditional VAE (Sohn et al. 2015) also has a `condition`, labels y → a context c(y) that the
    encoder, the decoder and a conditional prior take: Q(z|x, y), p(x|z, y), p(z|y). It is used through
    `model.given(y)`, the same model with y bound, which the objectives and the evaluation take as they
    take any model; asked for Q(z|x) or p(x|z) without its labels, it says so.
    """

    def __init__(self, encoder: nn.Module | int | None = None, decoder: nn.Module | int | None = None,
                 prior: nn.Module | str | None = None, condition: nn.Module | str | None = None, **settings: Any):
        super().__init__()
        if not isinstance(encoder, nn.Module):  # the seed's model by keywords: VAE(64, latent_dim=8, …)
            for name, value in (("data_dim", encoder), ("latent_dim", decoder), ("prior", prior), ("condition", condition)):
                if value is not None:
                    settings[name] = value
            self.settings = model_settings(settings)  # what rebuilds it (`checkpoint.model_config`)
            encoder, decoder, prior, condition = compose(**self.settings)
        elif decoder is None or prior is None or settings:
            raise TypeError("VAE(encoder, decoder, prior) takes three modules; for the seed's model by "
                            "settings write VAE(data_dim=…, latent_dim=…, …) or vaekit.build_model(cfg)")
        self.encoder, self.decoder, self.prior, self.condition = encoder, decoder, prior, condition

    def _unconditioned(self) -> None:
        if self.condition is not None:
            raise VaekitError("this VAE is conditioned on labels (Sohn et al. 2015): bind them with "
                              "model.given(y), y the labels of the batch [B]")

    def posterior(self, x: Tensor) -> Distribution:
        """Q(z|x): batch shape [B], event shape [k]."""
        self._unconditioned()
        return self.encoder(x)

    def p_x_given_z(self, z: Tensor) -> Distribution:
        self._unconditioned()
        return self.decoder(z)

    def forward(self, x: Tensor) -> Distribution:
        return self.posterior(examples(self, x))

    def given(self, y: Tensor | None) -> Joint:
        """The model with labels y [B] bound (`Given`); an unconditional model is itself, y unused."""
        return self if self.condition is None or y is None else Given(self, y)


class Given(Joint):
    """A conditional VAE with its labels y bound: Q(z|x, y), p(x|z, y), p(z|y) (p(z) for a prior that
    takes no context) as `posterior(x)`, `p_x_given_z(z)`, `prior()`, plus everything `Joint` derives
    from them (`sample(n)` with n = len(y), `encode`, `reconstruct`, `decode`, `log_joint`)."""

    def __init__(self, model: VAE, y: Tensor):
        self.model, self.y, self.context = model, y, model.condition(y)

    @property
    def decoder(self) -> nn.Module:
        return self.model.decoder

    def modules(self):
        """The model's modules (what `validating` and the like walk)."""
        return self.model.modules()

    def posterior(self, x: Tensor) -> Distribution:
        return self.model.encoder(x, self.context)

    def p_x_given_z(self, z: Tensor) -> Distribution:
        return self.model.decoder(z, self.context)

    def prior(self) -> Distribution:
        prior = self.model.prior
        return prior(self.context) if getattr(prior, "conditional", False) else prior()


def compose(
    data_dim: int,
    latent_dim: int | Sequence[int] = 20,
    hidden: Sequence[int] = (400,),
    activation: str = "relu",
    likelihood: Part = "bernoulli",
    shared_encoder: bool = True,
    init: str = "default",
    decoder_hidden: Sequence[int] | None = None,
    arch: Part = "mlp",
    data_shape: Sequence[int] | None = None,
    prior: Part = "standard",
    posterior: Part = "diagonal",
    layer_hidden: Sequence[int] | None = None,
    inference: str = "bottom-up",
    condition: str = "none",
    condition_classes: int = 0,
    columns: Schema | None = None,
) -> tuple[nn.Module, Decoder, nn.Module, nn.Module | None]:
    """(encoder, decoder, prior) from registered parts by name; `decoder_hidden=None` mirrors `hidden`.

    `shared_encoder=False` gives the posterior head's outputs from separate networks, half each
    (the seed's q(x; φ) for the mean and v(x; ψ) for the scale of a diagonal Q).
    `latent_dim=(d₁, …, d_L)` stacks L stochastic layers (`stack`); `hidden`, `posterior` and the
    likelihood belong to x ↔ z₁, `prior` to z_L; `inference="ladder"` draws Q top-down (Sønderby et al. 2016).
    `condition="label"` with `condition_classes=C` makes it a conditional VAE (Sohn et al. 2015): the
    encoder takes [x, one-hot y], the decoder [z, one-hot y]; `prior="label"` adds p(z|y).
    `columns`: a table's schema, for the mixed likelihood (`likelihood="mixed"`): its head says how the
    encoder sees a row with holes (`TableInput`, MIWAE's zero-filled cells and mask).
    """
    sizes = (latent_dim,) if isinstance(latent_dim, int) else tuple(latent_dim)
    labels = Labels(condition_classes) if condition == "label" else None
    c = condition_classes if labels is not None else 0
    if condition not in ("none", "label"):
        raise VaekitError(f"condition must be 'none' or 'label', got {condition!r}")
    data_shape = tuple(data_shape) if data_shape else (data_dim,)
    q_head = POSTERIORS.build(posterior, latent_dim=sizes[0])
    p_head = LIKELIHOODS.build(likelihood, data_dim=data_dim, schema=columns)
    last = (tuple(hidden)[:1] if decoder_hidden is None else tuple(decoder_hidden)[-1:]) or (sum(sizes),)
    if ARCHITECTURES.choose(arch).name in ("mlp", "gated"):  # a dense last layer: 256 outputs a value, say
        check_layer(last[0], p_head.out_features(data_dim), "the decoder's last layer")
    inputs = p_head.encoder_input() if hasattr(p_head, "encoder_input") else None  # how the encoder sees x
    if isinstance(p_head, TableObservation):
        p_head.refuse_composition(inference, labels is not None, PRIORS.choose(prior).name, data_dim)
    common = {"activation": activation, "init": init, "data_shape": data_shape}

    def net(role: str, n_in: int, n_out: int, sizes: Sequence[int]) -> nn.Module:
        return ARCHITECTURES.build(arch, role=role, in_features=n_in, out_features=n_out, hidden=tuple(sizes), **common)

    n_q = q_head.out_features(sizes[0])
    n_x = getattr(inputs, "features", data_dim)  # what the encoder's network takes of x
    if shared_encoder:
        enc_net = net("encoder", n_x + c, n_q, hidden)
    else:
        enc_net = Concat(net("encoder", n_x + c, n_q // 2, hidden), net("encoder", n_x + c, n_q - n_q // 2, hidden))
    dec_hidden = tuple(reversed(tuple(hidden))) if decoder_hidden is None else tuple(decoder_hidden)
    chosen = ARCHITECTURES.choose(arch)
    norm = dict(chosen.settings).get("norm", "none")  # the MLPs between stochastic layers follow --arch's
    if inference == "top-down":  # its networks are built by `deep`
        return (*deep(net, p_head, data_dim, sizes, hidden, dec_hidden, layer_hidden, activation, prior, posterior,
                      labels, data_shape), None)
    if inference == "hvae":
        if len(sizes) < 2 or labels is not None:
            raise VaekitError("inference = 'hvae' needs two or more stochastic layers (--latent-dim twice) and no "
                              "--condition")
        return (*hvae(net, p_head, data_dim, sizes, hidden, dec_hidden, layer_hidden, activation, init, prior,
                      posterior, data_shape, chosen.name == "gated", norm), None)
    dec_net = net("decoder", sizes[0] + c, p_head.out_features(data_dim), dec_hidden)
    encoder = Encoder(enc_net, q_head, inputs)
    if len(sizes) > 1:
        return (*stack(encoder, dec_net, p_head, data_dim, sizes, layer_hidden, activation, init, inference,
                       prior=prior, norm=norm, data_shape=data_shape, classes=c), labels)
    if inference != "bottom-up":
        raise VaekitError(f"inference = {inference!r} needs two or more stochastic layers (--latent-dim twice)")
    # A prior may use the encoder (VampPrior) but must not register it as its own submodule.
    p_z = PRIORS.build(prior, latent_dim=sizes[0], encoder=encoder, data_dim=data_dim, data_shape=data_shape, classes=c)
    return encoder, Decoder(dec_net, p_head, data_dim), p_z, labels


def stack(encoder: Encoder, dec_net: nn.Module, p_head: nn.Module, data_dim: int, sizes: Sequence[int],
          layer_hidden: Sequence[int] | None, activation: str, init: str, inference: str, prior: Part,
          norm: str = "none", **prior_settings: Any) -> tuple[nn.Module, Decoder, nn.Module]:
    """A hierarchical VAE (`parts.hierarchical`) around the one-layer parts of x ↔ z₁ (Burda et al. 2016):
    Q(z_{l+1}|z_l) and p(z_l|z_{l+1}) are diagonal Gaussians from MLPs with `layer_hidden` units (default
    two layers of 2·d_{l+1}: Burda's 100-100 between z₁ = 100 and z₂ = 50; batch-normalized with `norm`), p(z_L)
    the registered `prior`.
    `inference="ladder"`: the same networks, Q drawn top-down through the prior's (`LadderEncoder`);
    "ladder-unshared": Q's top-down steps are networks of its own, shaped as the prior's."""

    def gaussian(n_in: int, n_out: int, upper: int) -> Encoder:
        widths = tuple(layer_hidden) if layer_hidden is not None else (2 * upper, 2 * upper)
        return Encoder(mlp(n_in, widths, 2 * n_out, activation, init, norm), "diagonal")

    pairs = list(itertools.pairwise(sizes))
    if inference not in INFERENCE:
        raise VaekitError(f"inference must be one of {', '.join(INFERENCE)}, got {inference!r}")
    own = {"down": [gaussian(hi, lo, hi) for lo, hi in reversed(pairs)]} if inference == "ladder-unshared" else {}
    q_z = INFERENCE[inference](encoder, [gaussian(lo, hi, hi) for lo, hi in pairs], sizes, **own)
    top = PRIORS.build(prior, latent_dim=sizes[-1], encoder=TopPath(q_z), data_dim=data_dim, **prior_settings)
    p_z = HierarchicalPrior(top, [gaussian(hi, lo, hi) for lo, hi in reversed(pairs)], sizes)
    if isinstance(q_z, LadderEncoder):
        q_z.attach(p_z)
    return q_z, Decoder(First(sizes[0], dec_net, prior_settings.get("classes", 0)), p_head, data_dim), p_z


def hvae(net, p_head: nn.Module, data_dim: int, sizes: Sequence[int], hidden: Sequence[int], dec_hidden: Sequence[int],
         layer_hidden: Sequence[int] | None, activation: str, init: str, prior: Part, posterior: Part,
         data_shape: Sequence[int], gated: bool, norm: str = "none") -> tuple[nn.Module, Decoder, nn.Module]:
    """Tomczak & Welling's (2018) HVAE (`parts.hierarchical.HVAEEncoder`): Q(z_L|x) (the `posterior` family) and each
    Q(z_l|x, z_{l+1}) from `hidden` networks on x (and the layer above), p(z_l|z_{l+1}) diagonal Gaussians from
    `layer_hidden` MLPs as in `stack` (gated layers with `--arch gated`, the paper's; batch-normalized with `norm`),
    p(z_L) the registered `prior` over Q(z_L|·) (a VampPrior: Q(z_L|u_k)), and the decoder a `decoder_hidden`
    network on every layer."""
    top = Encoder(net("encoder", data_dim, POSTERIORS.build(posterior, latent_dim=sizes[-1]).out_features(sizes[-1]),
                      hidden), POSTERIORS.build(posterior, latent_dim=sizes[-1]))
    pairs = list(itertools.pairwise(sizes))
    lower = [Encoder(net("encoder", data_dim + hi, 2 * lo, hidden), "diagonal") for lo, hi in reversed(pairs)]
    q_z = HVAEEncoder(top, lower, sizes)
    def between(upper: int, lower: int) -> nn.Module:  # z_{l+1} → p(z_l|z_{l+1})'s mean and log-variance
        widths = tuple(layer_hidden) if layer_hidden is not None else (2 * upper, 2 * upper)
        if gated:
            return ARCHITECTURES.build("gated", role="prior", in_features=upper, out_features=2 * lower, hidden=widths)
        return mlp(upper, widths, 2 * lower, activation, init, norm)

    p_lower = [Encoder(between(hi, lo), "diagonal") for lo, hi in reversed(pairs)]
    p_top = PRIORS.build(prior, latent_dim=sizes[-1], encoder=top, data_dim=data_dim, data_shape=data_shape, classes=0)
    decoder = Decoder(net("decoder", sum(sizes), p_head.out_features(data_dim), dec_hidden), p_head, data_dim)
    return q_z, decoder, HierarchicalPrior(p_top, p_lower, sizes)


def deep(net, p_head: nn.Module, data_dim: int, sizes: Sequence[int], hidden: Sequence[int], dec_hidden: Sequence[int],
         layer_hidden: Sequence[int] | None, activation: str, prior: Part, posterior: Part,
         labels: nn.Module | None, data_shape: Sequence[int]) -> tuple[nn.Module, Decoder, nn.Module]:
    """A deep top-down VAE (`parts.topdown`): the bottom-up trunk is the `hidden` network from x whose last
    size is the path's width (or, with `layer_hidden`, the `hidden` network from x to a width of
    `layer_hidden[0]`), the decoder the `decoder_hidden` network from the last state h₀ to p(x|h₀);
    between them L groups on one path shared by p(z) and Q(z|x). The top group's prior is the path's Gaussian
    head at its learned state (`--prior standard`) or the registered `prior` over Q(z_L|·) (`TopGroup`: a
    VampPrior mixes Q(z_L|u_k))."""
    name = POSTERIORS.choose(posterior).name
    if name != "diagonal":
        raise VaekitError(f"a top-down VAE (--inference top-down) draws every group from the shared path: "
                          f"--posterior must be diagonal, got {name}")
    if labels is not None:
        raise VaekitError("a top-down VAE (--inference top-down) is not conditioned on labels yet: "
                          "use --inference bottom-up with --condition label")
    # the path's width: the last hidden size, the trunk's output (x → … → a₁, as deep as a one-layer encoder)
    width, trunk = (layer_hidden[0], hidden) if layer_hidden else (hidden[-1] if hidden else 256, hidden[:-1])
    path = TopDownPath(sizes, width, activation)
    encoder = TopDownEncoder(net("encoder", data_dim, width, trunk), path, activation)
    decoder = Decoder(LastState(path, net("decoder", width, p_head.out_features(data_dim), dec_hidden)), p_head, data_dim)
    top = None
    if PRIORS.choose(prior).name != "standard":
        top = PRIORS.build(prior, latent_dim=sizes[-1], encoder=TopGroup(encoder), data_dim=data_dim,
                           data_shape=data_shape, classes=0)
    return encoder, decoder, TopDownPrior(path, top)


def build_model(cfg: Any) -> VAE:
    """The VAE a `vaekit.runs.config.ModelConfig` describes (its `data_shape` resolved from the data)."""
    if not hasattr(cfg, "__dataclass_fields__") or not hasattr(cfg, "data_dim"):
        raise VaekitError(f"build_model: takes a vaekit.ModelConfig (Config().model, or load_config(run).model), got "
                          f"{type(cfg).__name__}; for settings by keyword write vaekit.VAE(data_dim=…, …)")
    wanted = set(inspect.signature(compose).parameters) - {"data_dim"}
    return VAE(data_dim=cfg.data_dim, **{k: getattr(cfg, k) for k in cfg.__dataclass_fields__ if k in wanted})


MOVED = {"sigma": "likelihood", "prior_components": "prior", "flow_steps": "posterior"}  # 0.2's keywords
SLOTS = {"likelihood": LIKELIHOODS, "prior": PRIORS, "posterior": POSTERIORS, "arch": ARCHITECTURES}


def model_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """`compose`'s keywords with their defaults, each part resolved to a `Choice`; an unknown keyword is
    refused naming the closest (a typo must not build another model than the one asked for)."""
    params = inspect.signature(compose).parameters
    for key in settings:
        if key in MOVED:
            raise VaekitError(f"VAE: {key} is a setting of the {MOVED[key]} since vaekit 0.3: write "
                              f"{MOVED[key]}={{'name': …, {'components' if key == 'prior_components' else key!r}: …}}")
        if key not in params:
            raise VaekitError(f"VAE takes no {key!r}{closest(key, params)}")
    if "data_dim" not in settings:  # VAE(None, …) or VAE(latent_dim=8): inspect's TypeError said less
        raise VaekitError("VAE: give data_dim (the size of an example, VAE(784, latent_dim=20, …)), or three modules "
                          "VAE(encoder, decoder, prior)")
    bound = inspect.signature(compose).bind(**settings)
    bound.apply_defaults()
    resolved = dict(bound.arguments)
    check_sizes(resolved)
    for name, registry in SLOTS.items():
        resolved[name] = registry.choose(resolved[name], f"VAE: {name}")
    return resolved
