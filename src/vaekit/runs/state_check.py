"""Checking a loaded trainer state against the model and optimizer it is about to drive.

`train_state.pt` is read with `weights_only=True`, so it cannot run code, but its tensors still go
straight into the optimizer's kernels: an Adam moment smaller than its parameter makes the fused
kernel write past the end of a buffer (a segfault or heap corruption, not an exception). So every
field is checked here first — keys, tensor shapes, dtypes, finiteness, step counters, positions —
and a file that fails is refused in one line naming the field.
"""

from __future__ import annotations

import json
import logging
import math
import re
from numbers import Real
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import VaekitError
from ..files import json_loads
from ..parts.registry import differing
from .config import Config, settings

log = logging.getLogger(__name__)

RESTART = "restore it, or delete it and model.safetensors and pass --resume to start the run again from step 0"
ADVICE = f"the file is damaged or belongs to another run; {RESTART}"
_COUNTERS = ("epoch", "step", "batch", "skipped", "examples")


class _Refusal(Exception):
    pass


def _need(ok: bool, field: str, problem: str) -> None:
    if not ok:
        raise _Refusal(f"{field} {problem}")


def _tensor(value: Any, field: str, like: Tensor | None = None, nonnegative: bool = False) -> Tensor:
    _need(isinstance(value, Tensor), field, f"is a {type(value).__name__}, not a tensor")
    if like is not None:
        _need(tuple(value.shape) == tuple(like.shape), field, f"has shape {list(value.shape)}, expected {list(like.shape)}")
        _need(value.dtype == like.dtype, field, f"has dtype {value.dtype}, expected {like.dtype}")
    if value.is_floating_point() or value.is_complex():
        _need(bool(torch.isfinite(value).all()), field, "holds NaN or Inf")
    if nonnegative:
        _need(bool((value >= 0).all()), field, "holds negative values")
    return value


def _number(value: Any, field: str, low: float | None = None, high: float | None = None, integer: bool = False) -> float:
    if isinstance(value, Tensor):
        _need(value.numel() == 1, field, f"is a tensor of shape {list(value.shape)}, expected one number")
        value = value.item()
    _need(isinstance(value, Real) and not isinstance(value, bool), field, f"is a {type(value).__name__}, not a number")
    _need(not isinstance(value, int) or abs(value) <= 2**63, field, "is a whole number beyond 2**63")  # 10**400: no float
    _need(math.isfinite(value), field, f"is {value}")
    _need(not integer or float(value).is_integer(), field, f"is {value}, not a whole number")
    _need(low is None or value >= low, field, f"is {value}, below {low}")
    _need(high is None or value <= high, field, f"is {value}, above {high}")
    return float(value)


def _module(saved: Any, module: nn.Module, key: str) -> None:
    _need(isinstance(saved, dict), key, "is not a state dict")
    expected = module.state_dict()
    missing, extra = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    _need(not missing, key, f"lacks {missing[:3]}")
    _need(not extra, key, f"has unknown entries {extra[:3]}")
    for name, like in expected.items():
        _tensor(saved[name], f"{key}.{name}", like)


CHECKED_OPTIONS = {"params", "lr", "betas", "eps"}  # each checked by itself in `_optimizer`
IMPLEMENTATION = {"foreach", "fused", "capturable"}  # how this process runs Adam: taken from its own optimizer
# every other option (weight_decay, maximize, amsgrad, differentiable, decoupled_weight_decay, …) must equal the run's


def own_implementation(saved: dict, optimizer: torch.optim.Optimizer) -> None:
    """The saved groups' implementation options (`IMPLEMENTATION`) replaced by this process's: a run trained
    with a fused kernel on one device resumes on another."""
    for group, mine in zip(saved["param_groups"], optimizer.param_groups):
        for key in IMPLEMENTATION & set(group) & set(mine):
            group[key] = mine[key]


def _plain(value: Any) -> Any:
    """An optimizer option as numbers (betas a tuple of floats, whatever the file held it as)."""
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    return float(value) if isinstance(value, (Real, Tensor)) and not isinstance(value, bool) else value


def _optimizer(saved: Any, optimizer: torch.optim.Optimizer, names: dict[int, str]) -> None:
    _need(isinstance(saved, dict) and set(saved) == {"state", "param_groups"}, "optimizer", "is not an optimizer state")
    ours, theirs = optimizer.state_dict()["param_groups"], saved["param_groups"]
    _need(isinstance(theirs, list) and len(theirs) == len(ours), "optimizer.param_groups",
          f"has {len(theirs) if isinstance(theirs, list) else 'no'} groups, expected {len(ours)}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, (mine, group) in enumerate(zip(ours, theirs)):
        field = f"optimizer.param_groups[{i}]"
        _need(isinstance(group, dict) and {"params", "lr"} <= set(group), field, "is not an optimizer group")
        _need(group["params"] == mine["params"], f"{field}.params", "name other parameters than this model's")
        _number(group["lr"], f"{field}.lr", low=0.0)
        _need(group["lr"] != 0, f"{field}.lr", "is 0")
        betas = group.get("betas", (0.0, 0.0))
        _need(isinstance(betas, (tuple, list)) and len(betas) == 2, f"{field}.betas", "is not a pair")
        for j, beta in enumerate(betas):
            _number(beta, f"{field}.betas[{j}]", low=0.0, high=1.0 - 1e-12)
        _number(group.get("eps", 1.0), f"{field}.eps", low=1e-300)
        for key in ("betas", "eps"):  # the run's --adam-eps and Adam's betas: a state's own would train otherwise
            if key in group and key in mine and _plain(group[key]) != _plain(mine[key]):
                raise _Refusal(f"{field}.{key} is {_plain(group[key])!r:.40}, but this run's optimizer has "
                               f"{_plain(mine[key])!r}")
        extra = sorted(set(group) - set(mine) - {"initial_lr"}, key=str)
        _need(not extra, field, f"has options {extra[:3]} that this run's optimizer lacks")
        for key in sorted(set(group) & set(mine) - CHECKED_OPTIONS - IMPLEMENTATION):  # maximize, amsgrad, …
            _need(type(group[key]) is type(mine[key]) and group[key] == mine[key], f"{field}.{key}",
                  f"is {group[key]!r:.40}, but this run's optimizer has {mine[key]!r}")
    state = saved["state"]
    _need(isinstance(state, dict), "optimizer.state", "is not a dict")
    for key, entry in state.items():
        _need(isinstance(key, int) and 0 <= key < len(params), "optimizer.state", f"names parameter {key!r}, which this model lacks")
        field, param = f"optimizer.state[{key}] ({names.get(key, '?')})", params[key]
        _need(isinstance(entry, dict), field, "is not a dict")
        _need({"step", "exp_avg", "exp_avg_sq"} <= set(entry) <= {"step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"},
              field, f"holds {sorted(entry)}, not Adam's step and moments")
        _number(entry["step"], f"{field}.step", low=0.0, integer=True)
        _tensor(entry["exp_avg"], f"{field}.exp_avg", param.detach())
        _tensor(entry["exp_avg_sq"], f"{field}.exp_avg_sq", param.detach(), nonnegative=True)
        if "max_exp_avg_sq" in entry:
            _tensor(entry["max_exp_avg_sq"], f"{field}.max_exp_avg_sq", param.detach(), nonnegative=True)


def _rng(value: Any, field: str, like: Tensor | None) -> None:
    _tensor(value, field)
    _need(value.dtype == torch.uint8 and value.dim() == 1, field, "is not a generator state (a 1-D uint8 tensor)")
    if like is not None:
        _need(value.numel() == like.numel(), field, f"has {value.numel()} bytes, expected {like.numel()}")
        try:  # the bytes of a valid Mersenne Twister state: set on a scratch generator, not the process's
            torch.Generator().set_state(value)
        except RuntimeError:
            raise _Refusal(f"{field} is not a valid generator state") from None


def check_state(saved: Any, model: nn.Module, optimizer: torch.optim.Optimizer, path: Path, max_batch: int,
                parts: nn.Module | None = None, ema: Any = None, spectral: Any = None) -> None:
    """Refuse `saved` (a loaded train_state.pt) in one line unless every field fits `model`, the
    objective's `parts` (if any) and `optimizer`; `max_batch` is the number of batches in an epoch
    (a mid-epoch position is ≤ it)."""
    try:
        _need(isinstance(saved, dict), "the file", "does not hold a dict")
        for key in ("model", "optimizer", "rng", *_COUNTERS, "sums", *(("parts",) if parts is not None else ())):
            _need(key in saved, key, "is missing")
        _need(parts is not None or "parts" not in saved, "parts",
              "holds an objective's own weights (a discriminator), which this run's objective lacks")
        _need((ema is not None) == ("ema" in saved), "ema", "is missing" if ema is not None else
              "holds an average of the weights, which this run does not keep")
        _module(saved["model"], model, "model")
        if ema is not None:
            _module(saved["ema"], ema, "ema")
        _need((spectral is not None) == ("spectral" in saved), "spectral", "is missing (config.json asks for "
              "spectral_reg, and the run was trained without it)" if spectral is not None else "holds spectral "
              "regularization's vectors, which this run does not keep (config.json's spectral_reg is 0)")
        if spectral is not None:
            _module(saved["spectral"], spectral, "spectral")
            for name, vector in saved["spectral"].items():  # unit vectors: 0 would switch the penalty off for good
                _need(abs(float(vector.double().norm()) - 1) <= 1e-4, f"spectral.{name}", "is not a unit vector")
        if "world_size" in saved:
            _need(isinstance(saved["world_size"], int) and not isinstance(saved["world_size"], bool), "world_size",
                  "is not an integer")
            _number(saved["world_size"], "world_size", low=1, high=2**20)
        if "oversized" in saved:
            _need(isinstance(saved["oversized"], int) and not isinstance(saved["oversized"], bool), "oversized",
                  "is not an integer")
            _number(saved["oversized"], "oversized", low=0, high=2**62)
        named = list(model.named_parameters())
        if parts is not None:
            _module(saved["parts"], parts, "parts")
            named += [(f"parts.{n}", p) for n, p in parts.named_parameters()]
        names = {i: n for i, (n, _) in enumerate(named)}
        _optimizer(saved["optimizer"], optimizer, names)
        _rng(saved["rng"], "rng", torch.get_rng_state())
        if "cuda_rng" in saved:
            _rng(saved["cuda_rng"], "cuda_rng", None)
        for key in _COUNTERS:
            _need(isinstance(saved[key], int) and not isinstance(saved[key], bool), key,
                  f"is a {type(saved[key]).__name__}, not an integer")
            _number(saved[key], key, low=0, high=2**62)
        _number(saved["batch"], "batch", high=max_batch)
        sums = saved["sums"]
        _need(isinstance(sums, dict) and all(isinstance(k, str) and len(k) <= 100 for k in sums) and len(sums) <= 1000,
              "sums", "is not a dict of named sums (names of at most 100 characters)")
        for name, value in sums.items():
            _number(value, f"sums[{name!r}]")
        if "stopping" in saved:  # early stopping's standing (`training.stopping`)
            _stopping(saved["stopping"], saved["epoch"])
        if "rank_sums" in saved or "rank_examples" in saved:  # every rank's sums (`checkpoint.rank_sums`)
            world, ranks, counts = saved.get("world_size", 1), saved.get("rank_sums"), saved.get("rank_examples")
            _need(isinstance(ranks, torch.Tensor) and ranks.dtype == torch.float32 and
                  tuple(ranks.shape) == (world, len(sums)), "rank_sums", f"is not float32 sums [{world}, {len(sums)}]")
            _need(bool(torch.isfinite(ranks).all()), "rank_sums", "holds NaN or Inf")
            _need(isinstance(counts, list) and len(counts) == world and
                  all(isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= 2**62 for n in counts),
                  "rank_examples", f"is not {world} counts of examples")
            ours = torch.tensor([float(v) for v in sums.values()], dtype=torch.float32)  # rank 0's row is `sums`
            _need(torch.equal(ranks[0], ours) and counts[0] == saved["examples"], "rank_sums",
                  "does not hold rank 0's sums and examples in its first row")
    except _Refusal as e:
        raise VaekitError(f"{path}: {e}; {ADVICE}") from None


def _stopping(value: Any, epoch: int) -> None:
    _need(isinstance(value, dict) and set(value) - {"digest"} == {"best", "best_epoch", "since"}, "stopping",
          "is not early stopping's standing (best, best_epoch, since, digest)")  # vaekit 0.5's has no digest
    digest = value.get("digest", "")
    _need(isinstance(digest, str) and (digest == "" or re.fullmatch("[0-9a-f]{64}", digest) is not None),
          "stopping.digest", "is not a sha256 in hexadecimal")
    for key in ("best_epoch", "since"):
        _need(isinstance(value[key], int) and not isinstance(value[key], bool), f"stopping.{key}", "is not an integer")
        _number(value[key], f"stopping.{key}", low=0, high=epoch)
    best = value["best"]
    _need(isinstance(best, float), "stopping.best", f"is a {type(best).__name__}, not a float")
    if value["best_epoch"] or best != -math.inf:  # −inf with epoch 0: no finite validation ELBO yet
        _number(best, "stopping.best", low=-1e12, high=1e12)  # nats per example: beyond, not an ELBO
        _need(value["best_epoch"] >= 1, "stopping.best_epoch", "is 0, but stopping.best is a value")
        _need(value["since"] <= epoch - value["best_epoch"], "stopping.since", "counts epochs before the best")


def recorded_config(cfg: Config) -> str:
    """What train_state.pt records of the config it was trained with (JSON text: weights_only reads it)."""
    return json.dumps(cfg.to_dict(), sort_keys=True)


def config_record(saved: Any, path: Path) -> dict | None:
    """The config a train_state.pt (loaded into `saved`, at `path`) records, as a dict of its sections; None for a
    state without one (vaekit before 0.4); a damaged record refused in one line."""
    if not isinstance(saved, dict) or "config" not in saved:
        return None
    text = saved["config"]
    try:
        _need(isinstance(text, str) and len(text) <= 2**20, "config", "is not the text of a config")
        try:
            recorded = json_loads(text)
        except ValueError as e:
            raise _Refusal(f"config is not valid JSON ({e})") from None
        _need(isinstance(recorded, dict) and all(isinstance(recorded.get(s), dict) for s in ("model", "data", "train")),
              "config", "does not hold the model, data and train sections")
    except _Refusal as e:
        raise VaekitError(f"{path}: {e}; {ADVICE}") from None
    return recorded


def _filled(f: Any, old: Any) -> Any:
    """A part's recorded table with the settings it lacks at that part's defaults (as for a missing setting)."""
    registry = f.metadata.get("registry")
    if registry is None or not isinstance(old, dict) or not isinstance(old.get("name"), str):
        return old
    try:
        return {**registry.choose(old["name"]).as_dict(), **old}
    except VaekitError:  # a part not registered here: compared as recorded
        return old


def _same_place(old: Any, new: Any) -> bool:
    """Two data paths that name one file: a recorded path that became a link to where config.json's path now
    resolves (the bytes are the data digest's to check)."""
    if not isinstance(old, str) or not isinstance(new, str):
        return False
    try:
        return Path(old).resolve() == Path(new).resolve()
    except (OSError, RuntimeError, ValueError):  # a loop of links, a NUL in the path
        return False


def _same_bytes(recorded: dict, now: dict) -> bool:
    """Whether the state's record and config.json hold one sha256 of the data (a run whose data moved: the bytes at
    the new path are checked against it before anything trains)."""
    digest = recorded["data"].get("digest", "")
    return bool(digest) and digest == now["data"].get("digest")


def check_config(saved: dict, cfg: Config | None, path: Path, config_path: Path) -> dict | None:
    """config.json (read into `cfg`) must hold the settings a resume cannot change as the checkpoint in
    `path` was trained with them: a config.json edited by hand between checkpoints would otherwise go on
    training another model, objective or data under the same run, silently. A state without the record
    (written by vaekit before 0.4) is not checked, nor one given no `cfg`; a setting the record lacks (one added
    to vaekit after the state was written, or a record emptied by hand) is taken at its default, the value a vaekit
    that did not know it trained with. Returns the record's train section."""
    recorded = config_record(saved, path)
    if cfg is not None and recorded is None:
        log.warning("%s records no config (a state of vaekit before 0.4, or one edited): %s is not checked against it",
                    path, config_path.name)
    if cfg is None or recorded is None:
        return None
    now, default = json.loads(recorded_config(cfg)), json.loads(recorded_config(Config()))
    for section, f in settings():
        if f.metadata["resumable"]:
            continue
        old, new = _filled(f, recorded[section].get(f.name, default[section][f.name])), now[section][f.name]
        where, old, new = differing(section, f.name, old, new)  # a part's table: the setting inside it
        moved = section == "data" and (_same_place(old, new) or f.name == "dataset" and _same_bytes(recorded, now))
        if old != new and not moved:
            raise VaekitError(
                f"{config_path}: {where} = {json.dumps(new)[:200]}, but {path.name} was trained with "
                f"{json.dumps(old)[:200]}: config.json was changed since the last checkpoint, and that setting "
                "cannot change on a resume; restore it, or train a new run elsewhere")
    return recorded["train"]
