"""Post-hoc samplers: a second density fitted on a trained VAE's aggregate posterior q(z) = E_x Q(z|x), drawn from
instead of the prior p(z) (`vaekit fit-sampler RUN --sampler NAME`, then `vaekit sample RUN --sampler NAME`).

Prior samples of a VAE are poor where p(z) puts mass the encoder never uses (the "holes" between the prior and
the aggregate posterior; Rosca et al. 2018, Dai & Wipf 2019). Two cures, each its paper's recipe:
- `gmm`: a 10-component full-covariance Gaussian mixture on the posterior means of the training split
  (Ghosh et al. 2020, "ex-post density estimation"); saved as RUN/samplers/gmm.safetensors (float64).
- `two-stage`: a second VAE with as many latents as the first, trained on one draw z ~ Q(z|x) per training
  example (Dai & Wipf 2019, "Diagnosing and enhancing VAE models"); a sample is z ~ p(z|u) for u ~ N(0, I).
  Dai & Wipf learn one decoder variance γ and take E[z|u]; here that second VAE collapsed at once (KL → 0: the
  draws' moments are already those of N(0, I), so a constant E[z|u] with γ ≈ 1 explains them, and every sample is
  the same), so the second stage learns a σ per dimension, warms its KL up over 5 epochs, and its samples keep
  that σ's noise (BENCHMARKS.md, "Samplers", has both). Saved as a run directory of its own,
  RUN/samplers/two-stage (vaekit.load reads it).
Both hold weights and numbers only: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from ..data import Dataset
from ..errors import TrainingInterrupted, VaekitError
from ..evaluation.features import feature_space, grey_levels
from ..evaluation.latents import posterior_summary
from ..evaluation.mixture import Mixture, fit_mixture
from ..evaluation.quality import PR_NEIGHBOURS, frechet_distance, precision_recall
from ..files import RunLock, atomic_write, check_regular, json_loads, own_folder, read_capped
from ..model import VAE
from .checkpoint import WEIGHTS, canonical_safetensors, load_config, load_run
from .experiment import load_data
from .fit import fit
from .opening import point_data
from .saving import to_data_units
from .weights_kept import weights_sha256

SAMPLERS = ("gmm", "two-stage")
FOLDER = "samplers"
GMM_FILE = "gmm.safetensors"
FITTED_ON = "fitted_on.json"  # in the two-stage folder: {"model_sha256": …} of the weights it was fitted on
MODEL_DIGEST = "model_sha256"
MAX_GMM_BYTES = 256 << 20  # 100 components over 512 latents take 210 MB: a larger file is not one of ours


@dataclass
class TwoStage:
    """The two-stage sampler's settings (Dai & Wipf used 3 × 1024 and hundreds of epochs on a GPU; these fit a CPU)."""

    hidden: tuple[int, ...] = (512, 512)
    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-3


def check_name(name: str) -> str:
    if name not in SAMPLERS:
        raise VaekitError(f"--sampler {name!r}: choose one of {', '.join(SAMPLERS)}")
    return name


def codes(model: nn.Module, x: Tensor, draw: bool, seed: int) -> Tensor:
    """The codes of x: posterior means, or (draw) one seeded draw z ~ Q(z|x) per example; [N, k] float32."""
    if not draw:
        return posterior_summary(model, x, seed=seed)[0]
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return torch.cat([model.encode(xb, distribution=True).sample() for xb in x.split(1000)])


def fit_sampler(run: str | Path, name: str, components: int = 10, seed: int = 0, two_stage: TwoStage | None = None,
                progress: bool = True, dataset: str | None = None, data_dir: str | None = None) -> dict[str, Any]:
    """Fit sampler `name` on the run's training codes and save it in RUN/samplers; returns what was fitted.
    `dataset`, `data_dir`: where the run's data lie now (`opening.point_data`), if not where it says."""
    run, name = Path(run), check_name(name)
    if name == "gmm" and components < 1:
        raise VaekitError(f"--components must be a number of mixture components ≥ 1, got {components}")
    load_config(run)  # a run directory (the lock below would make one)
    # the run's own lock: a `train --resume` would change the weights between their reading and their digest
    with RunLock(run, busy="holds this run (training it, or fitting a sampler of it); wait for it to finish or stop it"):
        cfg, model = load_run(run)
        if cfg.model.conditional:
            raise VaekitError(f"{run}: a conditional VAE's codes depend on the label; post-hoc samplers are fitted for "
                              "unconditional models")
        data = load_data(point_data(cfg, dataset, data_dir), run)
        own_folder(run / FOLDER)
        digest = weights_sha256(run)  # under the lock (which also keeps a second fit of this run out)
        if name == "gmm":
            return fit_gmm(run / FOLDER / GMM_FILE, codes(model, data.eval_split("train"), False, seed), components, seed,
                           digest)
        return fit_two_stage(run / FOLDER, model, data, seed, two_stage or TwoStage(), progress, digest)


def check_fitted_on(run: Path, what: Path, recorded: str | None, name: str) -> None:
    """Refuse a sampler fitted on other weights than the run's now: its codes are of another encoder."""
    if recorded is None:
        raise VaekitError(f"{what}: does not record the weights it was fitted on; fit it again: vaekit fit-sampler RUN "
                          f"--sampler {name}")
    if recorded != weights_sha256(run):
        raise VaekitError(f"{what}: fitted on other weights than {run / WEIGHTS} has now (trained further since?); fit it "
                          f"again: vaekit fit-sampler RUN --sampler {name}")


def fit_gmm(path: Path, z: Tensor, components: int, seed: int, digest: str) -> dict[str, Any]:
    """The mixture of the training means z, written to `path` (the same bytes for the same fit)."""
    mixture, mean_log_lik = fit_mixture(z, components, seed=seed)
    replaced = path.exists()
    tensors = {"weights": mixture.weights, "means": mixture.means, "covariances": mixture.covariances}
    meta = {"sampler": "gmm", "fitted_on": "posterior means of the train split", "codes": str(z.shape[0]),
            MODEL_DIGEST: digest}
    data = canonical_safetensors(safetensors_bytes(tensors, metadata=meta))
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))
    return {"sampler": "gmm", "codes": z.shape[0], "components": components, "mean_log_likelihood": mean_log_lik,
            "replaced": replaced}


def fit_two_stage(folder: Path, model: nn.Module, data: Dataset, seed: int, settings: TwoStage,
                  progress: bool, digest: str) -> dict[str, Any]:
    """The second-stage VAE, trained aside in FOLDER/two-stage.fitting, then put in place of an earlier fit (which
    is renamed aside first, so that a kill at any moment leaves one whole sampler that `two_stage_folder` finds)."""
    final, fresh, old = (folder / name for name in ("two-stage", "two-stage.fitting", "two-stage.old"))
    for path in (final, fresh, old):  # said before training, not after
        if path.is_symlink() or path.is_file():
            raise VaekitError(f"{path}: is a link or a file, not vaekit's fitted sampler: remove it, then fit again")
    z_train = codes(model, data.eval_split("train"), True, seed)
    z_val = codes(model, data.eval_split("val"), True, seed + 1) if "val" in data.present_splits() else None
    k = z_train.shape[1]
    with torch.random.fork_rng():  # its first weights from --seed, not from whatever this process drew before
        torch.manual_seed(seed)
        stage2 = VAE(data_dim=k, latent_dim=k, hidden=settings.hidden,
                     likelihood={"name": "gaussian-learned-per-dim", "sigma": 1.0})
    if not final.exists():  # a fit killed while it swapped folders: its whole sampler goes in place first
        where = two_stage_folder(folder.parent)
        if where is not None and where != final:
            os.replace(where, final)
    for leftover in (fresh, old):  # an interrupted fit's
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        result = fit(stage2, z_train, z_val, out=fresh, progress=progress, epochs=settings.epochs,
                     batch_size=settings.batch_size, lr=settings.lr, seed=seed,
                     objective={"name": "elbo", "kl_warmup_epochs": min(5.0, settings.epochs / 4)})
    except TrainingInterrupted as e:  # its message says --resume, which fit-sampler has not: a fit starts afresh
        raise TrainingInterrupted("the two-stage fit was interrupted; the earlier sampler (if any) is kept; run "
                                  "fit-sampler again to fit it", signum=e.signum) from None
    atomic_write(fresh / FITTED_ON, lambda tmp: Path(tmp).write_text(json.dumps({MODEL_DIGEST: digest}) + "\n"))
    replaced = final.exists()
    if replaced:
        os.replace(final, old)
    os.replace(fresh, final)
    shutil.rmtree(old, ignore_errors=True)
    last = result.history[-1]
    sigma = result.model.decoder.head.log_sigma.detach().exp()
    return {"sampler": "two-stage", "codes": z_train.shape[0], "epochs": settings.epochs,
            "elbo": last.get("val/elbo", last["train/elbo"]), "kl": last.get("val/kl", last["train/kl"]),
            "sigma_median": float(sigma.median()), "replaced": replaced}


def load_gmm(path: Path, latent_size: int) -> Mixture:
    """The saved mixture, checked: the three tensors, their shapes for `latent_size`, weights that sum to 1,
    covariances that are symmetric positive definite (a crafted file is refused in one line); found by `fitted_path`."""
    check_regular(path, MAX_GMM_BYTES)
    try:
        t = load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise VaekitError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    if set(t) != {"weights", "means", "covariances"}:
        raise VaekitError(f"{path}: holds {sorted(t)}, not weights, means and covariances")
    if any(v.dtype != torch.float64 for v in t.values()):
        raise VaekitError(f"{path}: tensors of {sorted({str(v.dtype) for v in t.values()})}; vaekit writes float64")
    w, mu, cov = (t[key].to(torch.float64) for key in ("weights", "means", "covariances"))
    k = w.shape[0] if w.dim() == 1 else -1
    if k < 1 or mu.shape != (k, latent_size) or cov.shape != (k, latent_size, latent_size):
        raise VaekitError(f"{path}: shapes {tuple(w.shape)}, {tuple(mu.shape)}, {tuple(cov.shape)} do not make a "
                          f"mixture over this run's {latent_size} latents")
    if not all(torch.isfinite(x).all() for x in (w, mu, cov)) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
        raise VaekitError(f"{path}: weights or parameters are not finite, or the weights do not sum to 1")
    if not torch.allclose(cov, cov.transpose(1, 2)) or torch.linalg.cholesky_ex(cov).info.any():
        raise VaekitError(f"{path}: a covariance is not symmetric positive definite")
    if float(mu.abs().max()) > 1e15 or float(cov.diagonal(dim1=1, dim2=2).max()) > 1e30:
        raise VaekitError(f"{path}: means or variances beyond 1e15 / 1e30: not a mixture of any decoder's codes")
    return Mixture(w, mu, cov)


def fitted_path(run: str | Path, name: str) -> Path:
    """Where the run's sampler `name` lies; refused in one line where it was never fitted (checked before any work
    that would end in needing it)."""
    name = check_name(name)
    path = Path(run) / FOLDER / (GMM_FILE if name == "gmm" else "two-stage")
    found = two_stage_folder(Path(run)) if name == "two-stage" else path
    if found is None or not found.exists() and not found.is_symlink():
        raise VaekitError(f"{path}: missing; fit it first: vaekit fit-sampler {run} --sampler {name}")
    return found


def two_stage_folder(run: Path) -> Path | None:
    """The run's whole two-stage sampler: samplers/two-stage, or where a fit killed while it swapped folders left
    one (the new fit, finished: it records the weights it was fitted on; else the earlier, renamed aside); None."""
    folder = run / FOLDER
    final, fresh, old = (folder / name for name in ("two-stage", "two-stage.fitting", "two-stage.old"))
    if final.exists() or final.is_symlink():
        return final
    if fresh.is_dir() and not fresh.is_symlink() and (fresh / FITTED_ON).is_file():
        return fresh
    return old if old.is_dir() and not old.is_symlink() else None


def draw_codes(run: str | Path, name: str, n: int, seed: int = 0, latent_size: int | None = None) -> Tensor:
    """n latents [n, k] from the run's fitted sampler `name`, seeded (the caller's random state untouched)."""
    run, name = Path(run), check_name(name)
    if latent_size is None:
        latent_size = load_config(run).model.latent_size
    if name == "gmm":
        path = fitted_path(run, name)
        source = load_gmm(path, latent_size).distribution()
        with safe_open(path, "pt") as f:
            check_fitted_on(run, path, (f.metadata() or {}).get(MODEL_DIGEST), name)
    else:
        where = fitted_path(run, name)
        if not where.is_dir():
            raise VaekitError(f"{where}: not a folder: fit it again: vaekit fit-sampler RUN --sampler two-stage")
        check_fitted_on(run, where, fitted_on(where / FITTED_ON), name)
        with torch.random.fork_rng(devices=[]):  # building draws initial weights: not from the caller's stream
            stage2 = load_run(where)[1]
        if stage2.data_dim != latent_size:
            raise VaekitError(f"{where}: draws {stage2.data_dim} latents, but this run has {latent_size}")
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        if name == "gmm":
            return source.sample((n,)).to(torch.float32)
        return stage2.sample(n, mean=False)  # z ~ p(z|u), u ~ N(0, I): with its learned σ (module docstring)


def fitted_on(path: Path) -> str | None:
    """The weights' digest a two-stage folder records, or None where it records none readable."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        recorded = json_loads(read_capped(path, 4096))
    except (ValueError, UnicodeDecodeError):
        return None
    return recorded.get(MODEL_DIGEST) if isinstance(recorded, dict) and isinstance(recorded.get(MODEL_DIGEST), str) \
        else None


def sample_quality(run: str | Path, n: int, sampler: str | None = None, seed: int = 0,
                   dataset: Dataset | None = None) -> dict[str, Any]:
    """Fréchet distance and precision/recall (`evaluation.quality`) of n samples E[x|z], z from p(z) or from a
    fitted sampler, against the first n test examples in grey levels, in `evaluation.features`' space; with the
    same numbers for n training examples against those test examples (`reference_*`: what a perfect model gets
    at this n). `dataset`: the run's data where it lies now (else where config.json says)."""
    run = Path(run)
    cfg, model = load_run(run)
    dataset = dataset if dataset is not None else load_data(cfg, run)
    space = feature_space(dataset)
    real = grey_levels(dataset, "test")[:n]
    n = real.shape[0]
    if n <= PR_NEIGHBOURS:  # precision and recall need each point's PR_NEIGHBOURS-th neighbour among the others
        raise VaekitError(f"--samples {n}: sample quality needs at least {PR_NEIGHBOURS + 1} samples and as many test "
                          "examples")
    if sampler is not None:
        z = draw_codes(run, sampler, n, seed=seed, latent_size=cfg.model.latent_size)
    else:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed)
            given = model.given(torch.arange(n) % cfg.model.condition_classes) if cfg.model.conditional else model
            p_z = given.prior()
            z = p_z.sample() if tuple(p_z.batch_shape) == (n,) else p_z.sample((n,))
            model = given
    with torch.no_grad():
        fake = to_data_units(cfg, run, torch.cat([model.p_x_given_z(zb).mean for zb in z.split(1000)]))
    f_real, f_fake = space.features(real), space.features(fake)
    f_train = space.features(grey_levels(dataset, "train")[:n])
    precision, recall = precision_recall(f_real, f_fake)
    ref_precision, ref_recall = precision_recall(f_real, f_train)
    return {"samples": n, "sampler": sampler or "prior", "features": space.name, "seed": seed,
            "frechet_distance": frechet_distance(f_real, f_fake), "precision": precision, "recall": recall,
            "reference_frechet_distance": frechet_distance(f_real, f_train), "reference_precision": ref_precision,
            "reference_recall": ref_recall}
