"""The run directory: config.json, model.safetensors, train_state.pt, metrics.jsonl, and what they hold.

Every file is written to a temporary file in the same directory and then `os.replace`d, so a crash leaves either the
old file or the new one, never half of one. Weights are read only through safetensors and the trainer state only with
`torch.load(weights_only=True)`: nothing we load can run code. The architecture is rebuilt from config.json, never
unpickled."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import io
import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from ..data.dataset import checked_statistics
from ..errors import NonFiniteLossError, PluginError, VaekitError
from ..files import LOCK, RunLock, atomic_write, check_regular, check_zip_members, read_capped, remove_stale_temporaries
from ..model import VAE, build_model
from ..training.distributed import Context, every_rank
from ..training.loop import SMALLER_LR, LoopState, all_finite, lr_to_device, settle
from ..training.stopping import Stopping
from .config import Config
from .history import METRICS, read_metrics, truncate_metrics
from .migrations import migrate, raw_count_inputs
from .plugins import is_loaded
from .state_check import RESTART, check_config, check_state, own_implementation, recorded_config

log = logging.getLogger(__name__)
CONFIG, WEIGHTS, STATE = "config.json", "model.safetensors", "train_state.pt"
STANDARDIZATION = "standardization.safetensors"  # the training split's mean and spread, when standardizing
LAYOUT_VERSION = (0, 2)  # runs written before VAE(encoder, decoder, prior) hold another state-dict layout
SETTINGS_VERSION = (0, 3)  # runs written before it keep the parts' settings flat in config.json (`migrations.migrate`)
COUNT_INPUT_VERSION = (0, 4)  # runs written before it fed count likelihoods' encoders raw counts (`raw_count_inputs`)


def vaekit_version() -> str:
    """The installed package's version (from its metadata: nothing here imports the package root)."""
    try:
        return importlib.metadata.version("vaekit")
    except importlib.metadata.PackageNotFoundError:  # a source tree on sys.path, never installed
        return "0+unknown"


def versions() -> dict[str, str]:
    return {"vaekit": vaekit_version(), "torch": torch.__version__}


def save_config(run: Path, cfg: Config) -> None:
    text = json.dumps({**cfg.to_dict(), "versions": versions()}, indent=2) + "\n"
    atomic_write(run / CONFIG, lambda tmp: Path(tmp).write_text(text))


def load_config(run: Path) -> Config:
    path = Path(run) / CONFIG
    if not Path(run).is_dir():
        raise VaekitError(f"{run}: no such run directory")
    try:
        d = json.loads(read_capped(path).decode())
    except VaekitError:  # a FIFO, a link to no file: said as such
        raise
    except FileNotFoundError:
        raise VaekitError(f"{path}: missing; is {run} a vaekit run directory?") from None
    except OSError as e:
        raise VaekitError(f"{path}: cannot read ({e.strerror})") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise VaekitError(f"{path}: not valid JSON ({'nested too deeply' if isinstance(e, RecursionError) else e})") from None
    if not isinstance(d, dict):
        raise VaekitError(f"{path}: expected a JSON object")
    recorded = d.pop("versions", None)
    if not isinstance(recorded, (dict, type(None))) or not isinstance(written_by := (recorded or {}).get("vaekit", ""), str):
        raise VaekitError(f"{path}: versions must be an object of version strings, got {recorded!r:.60}")
    if not re.match(r"\d", written_by):  # vaekit writes its version in every config.json
        raise VaekitError(f"{path}: " + (f"versions.vaekit {written_by!r:.40} is not a version" if written_by else
                          "records no vaekit version") + ": not a config.json vaekit wrote, or damaged")
    if _version_tuple(written_by) > _version_tuple(versions()["vaekit"]):
        raise VaekitError(f"{path}: written by vaekit {written_by}, newer than this vaekit {versions()['vaekit']}; "
                          "upgrade vaekit to read it")
    if _version_tuple(written_by)[:2] < LAYOUT_VERSION:
        raise VaekitError(f"{path}: written by vaekit {written_by}, whose model layout this vaekit "
                          f"{versions()['vaekit']} does not read; retrain it, or read it with vaekit {written_by}")
    model = d.get("model") if isinstance(d.get("model"), dict) else {}
    if not isinstance(model.get("plugins", []), list):
        raise VaekitError(f"{path}: [model] plugins must be a list of plugin names, got {model.get('plugins')!r:.60}")
    missing = [p for p in model.get("plugins", []) if isinstance(p, str) and not is_loaded(p)]
    if missing:
        flags = " ".join(f"--plugin {p}" for p in missing)
        raise PluginError(f"{path}: this run's parts come from the plugin {', '.join(missing)}, which is not loaded; "
                          f"pass {flags} (a run directory never imports code by itself)")
    if _version_tuple(written_by)[:2] < SETTINGS_VERSION:
        d = migrate(d)  # 0.2 kept the parts' settings flat beside the part's name
    if _version_tuple(written_by)[:2] < COUNT_INPUT_VERSION:
        d = raw_count_inputs(d)  # before 0.4 a count likelihood's encoder saw the raw counts
    return Config.from_dict(d, source=str(path))


def _version_tuple(v: str) -> tuple[int, ...]:
    """"0.4.0" → (0, 4, 0); a piece's digits only ("1rc2" → 12), none → 0."""
    return tuple(int("".join(ch for ch in piece if ch.isdigit()) or 0) for piece in v.split("."))


def save_weights(run: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> str:
    """model.safetensors of `model`; returns the file's sha256."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    data = canonical_safetensors(safetensors_bytes(tensors, metadata=metadata))
    atomic_write(run / WEIGHTS, lambda tmp: Path(tmp).write_bytes(data))
    return hashlib.sha256(data).hexdigest()


def canonical_safetensors(data: bytes) -> bytes:
    """The file with its header's metadata sorted (safetensors writes a hash map's order): equal weights, equal bytes."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    if "__metadata__" in header:
        header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data start 8-byte aligned, as safetensors pads them
    return len(text).to_bytes(8, "little") + text + data[8 + n :]


def check_shapes_first(run: Path, cfg: Config) -> None:
    """The model config.json describes, built on torch's meta device (no memory), against model.safetensors' header,
    before it is built for real: a few bytes changed in config.json (hidden 20000) would allocate gigabytes first."""
    path = Path(run) / WEIGHTS
    try:
        with torch.random.fork_rng(devices=[]), torch.device("meta"):  # the caller's random stream untouched
            meta = build_model(cfg.model)
    except VaekitError as e:  # a setting out of range (condition_classes 0 for labels): config.json's
        raise VaekitError(f"{run / CONFIG}: {e}") from None
    except Exception:  # noqa: BLE001 - a part the meta device cannot build: the real build checks (and says why)
        return
    if not path.exists():
        return  # said where the weights are loaded
    check_regular(path, weights_bytes(meta) + HEADER_SLACK)
    try:
        with safe_open(str(path), "pt") as f:
            found = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 - safe_open has no iter
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise VaekitError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    same_shapes(path, meta, found)


def same_shapes(path: Path, model: nn.Module, found: dict[str, tuple[int, ...]], given: bool = False) -> None:
    """The weights' shapes are the model's: the one config.json describes, or the one the caller `given`."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        whose = "the model given to vaekit.load" if given else f"the architecture in {CONFIG}"
        raise VaekitError(f"{path}: weights do not match {whose} (first differences: {diff})")


def load_weights(run: Path, model: nn.Module, given: bool = False) -> None:
    path = Path(run) / WEIGHTS
    if not path.exists() and not path.is_symlink() and path.with_name(STATE).exists():
        raise VaekitError(f"{path}: missing; {STATE} holds them: `vaekit train --out {run} --resume` writes it")
    check_regular(path, weights_bytes(model) + HEADER_SLACK)  # a FIFO would block, a sparse file claim any size
    try:
        tensors = load_file(path)
    except FileNotFoundError:
        raise VaekitError(f"{path}: missing") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise VaekitError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    same_shapes(path, model, {k: tuple(v.shape) for k, v in tensors.items()}, given)
    own = model.state_dict()
    cast = [k for k, v in tensors.items() if v.dtype != own[k].dtype]
    if cast:  # a float64 1e300 is finite, and inf once loaded into the float32 model
        raise VaekitError(f"{path}: {cast[0]} is {str(tensors[cast[0]].dtype).removeprefix('torch.')}, but the model's is "
                          f"{str(own[cast[0]].dtype).removeprefix('torch.')}; vaekit writes the model's own dtype")
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise VaekitError(f"{path}: the weights hold NaN or Inf (in {bad[0]}{' and others' if len(bad) > 1 else ''}); "
                          "the run diverged: retrain it with a smaller --lr")
    model.load_state_dict(tensors)


HEADER_SLACK = 64 << 20  # a safetensors header beyond the tensors themselves: far more than a real one
MAX_STATE_BYTES = 64 << 30  # train_state.pt: Adam's moments are twice the weights; beyond this it is not ours


def weights_bytes(model: nn.Module) -> int:
    """What the tensors of `model`'s state take in a safetensors file."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def save_standardization(run: Path, shift: torch.Tensor, spread: torch.Tensor) -> None:
    tensors = {"shift": shift.detach().cpu().contiguous(), "spread": spread.detach().cpu().contiguous()}
    atomic_write(run / STANDARDIZATION, lambda tmp: save_file(tensors, tmp))


def load_standardization(run: Path, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(shift, spread) of a run trained with standardize = true, checked for `dim` dimensions (sample, decode)."""
    path = Path(run) / STANDARDIZATION
    if not path.exists() and not path.is_symlink():
        raise VaekitError(f"{path}: missing; `vaekit train --out {run} --resume` computes it again from the data")
    check_regular(path, 16 * dim + HEADER_SLACK)  # two float32 vectors (float64 at most) and a header
    try:
        tensors = load_file(path)
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise VaekitError(f"{path}: corrupt or not a standardization file ({str(e).splitlines()[0]})") from None
    if set(tensors) != {"shift", "spread"} or {t.dtype for t in tensors.values()} != {torch.float32}:
        raise VaekitError(f"{path}: holds {', '.join(f'{k} ({str(v.dtype)[6:]})' for k, v in sorted(tensors.items()))}"
                          ", not the float32 shift and spread vaekit writes")
    return checked_statistics(tensors["shift"], tensors["spread"], dim, str(path))


def save_state(run: Path, state: dict[str, Any]) -> None:
    buffer = io.BytesIO()  # not the temporary file: torch.save names the archive after it, so bytes would differ
    torch.save(interned(state), buffer)
    atomic_write(run / STATE, lambda tmp: Path(tmp).write_bytes(buffer.getbuffer()))


def interned(value: Any) -> Any:
    """`value` with every dict key a string interned: pickle memoizes a key by identity, and a state loaded from
    disk holds fresh copies of keys ("step") that an uninterrupted run shares, so the bytes would differ."""
    if isinstance(value, dict):
        return {sys.intern(k) if isinstance(k, str) else k: interned(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interned(v) for v in value]
    return value


def load_state(run: Path) -> dict[str, Any]:
    path = Path(run) / STATE
    if not path.exists() and not path.is_symlink():
        raise VaekitError(f"{path}: missing; nothing to resume")
    check_regular(path, MAX_STATE_BYTES)  # a FIFO would block torch.load for ever
    check_zip_members(path, path, stored=True)  # torch.load would inflate a compressed record first
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt archives come as many types
        said = (str(e).splitlines() or ["empty"])[0] if "weights_only" not in str(e) else "it holds more than tensors"
        raise VaekitError(f"{path}: cannot load trainer state safely ({type(e).__name__}: {said}); vaekit never "
                          f"unpickles it; {RESTART}") from None


def restore(
    out: Path, model: VAE, optimizer: torch.optim.Optimizer, state: LoopState, rank: int = 0,
    max_batch: int = 2**62, parts: nn.Module | None = None, ema: Any = None, world_size: int = 1,
    spectral: Any = None, cfg: Config | None = None,
) -> list[dict[str, Any]]:
    """Continue from train_state.pt, which holds the weights too, so it is consistent on its own. Every field is
    checked against `model`, the objective's `parts` (if any), `optimizer` and `cfg` first (`state_check`);
    `max_batch` is the number of batches in an epoch; `world_size` the processes resuming it (those that wrote it).

    Under torch.distributed, rank 0 alone rewrites metrics.jsonl; each `rank` takes its own running sums of the
    epoch (`rank_sums`), so the epoch's means are the straight run's.
    """
    saved = load_state(out)
    check_state(saved, model, optimizer, out / STATE, max_batch, parts, ema, spectral)
    state.trained_with = check_config(saved, cfg, out / STATE, out / CONFIG)
    if saved.get("world_size", world_size) != world_size:
        raise VaekitError(f"{out / STATE}: written by {saved['world_size']} process(es), resumed by {world_size}: the "
                          "batches of an epoch and the global batch depend on it; resume with "
                          f"{saved['world_size']} (torchrun --nproc-per-node), or train a new run into another --out")
    try:
        model.load_state_dict(saved["model"])
        if parts is not None:
            parts.load_state_dict(saved["parts"])
        own_implementation(saved["optimizer"], optimizer)
        optimizer.load_state_dict(saved["optimizer"])
        lr_to_device(optimizer)
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        if spectral is not None:
            spectral.load_state_dict(saved["spectral"])
    except (KeyError, RuntimeError, ValueError) as e:
        raise VaekitError(f"{out / STATE}: does not match the model in {CONFIG} ({str(e).splitlines()[0]})") from None
    torch.set_rng_state(saved["rng"])
    device = next(model.parameters()).device
    if device.type == "cuda" and "cuda_rng" in saved:  # the training noise drawn on the GPU continues too
        torch.cuda.set_rng_state(saved["cuda_rng"], device)
    state.epoch, state.step, state.batch = int(saved["epoch"]), int(saved["step"]), int(saved["batch"])
    state.sums, state.skipped, state.examples = dict(saved["sums"]), int(saved["skipped"]), int(saved["examples"])
    state.oversized, state.origin = int(saved.get("oversized", 0)), str(out / STATE)
    state.stopping = Stopping(**saved["stopping"]) if "stopping" in saved else None  # checked: `state_check`
    if "rank_sums" in saved:  # every rank's own, gathered at the checkpoint
        state.sums = dict(zip(state.sums, saved["rank_sums"][rank].unbind()))
        state.examples = int(saved["rank_examples"][rank])
    elif rank != 0:  # a state of vaekit before 0.4 holds rank 0's alone: the others start from zero
        state.sums, state.examples = {}, 0
    if cfg is not None and state.batch == 0 and state.epoch >= cfg.train.epochs:
        log.info("%s: trained %d epochs already (epochs = %d): nothing to train", out, state.epoch, cfg.train.epochs)
    else:
        log.info("resuming %s at epoch %d, batch %d", out, state.epoch + 1, state.batch)
    if rank == 0:
        return truncate_metrics(out, state.epoch)
    return [r for r in read_metrics(out) if r.get("epoch", 0) <= state.epoch]


@contextlib.contextmanager
def writing(run: Path):
    """Hold the run directory's lock while writing it (`rundir.RunLock`: a second trainer is refused,
    naming the holder), after removing temporaries a process killed mid-write left. A directory this
    call created is removed again if nothing was written into it, and the empty folders above it it made."""
    run = Path(run)
    created = [p for p in (run, *run.parents) if not p.exists() and not p.is_symlink()]  # run first, then upward
    try:
        with RunLock(run):
            for stale in remove_stale_temporaries(run, (CONFIG, WEIGHTS, STATE, METRICS, STANDARDIZATION)):
                log.info("removed %s, left by a process that stopped mid-write", stale.name)
            yield run
    except BaseException:
        if created and run.is_dir() and {p.name for p in run.iterdir()} <= {LOCK}:
            (run / LOCK).unlink(missing_ok=True)
            for folder in created:  # deepest first; one that holds anything now stays
                with contextlib.suppress(OSError):
                    folder.rmdir()
        raise


def start_run(run: Path, cfg: Config, shift: torch.Tensor | None = None, spread: torch.Tensor | None = None) -> None:
    """A fresh run's first files: config.json, the standardization if any, and an empty metrics log
    (a run restarted from step 0 drops the lines of its first attempt)."""
    save_config(run, cfg)
    if shift is not None:
        save_standardization(run, shift, spread)
    if (Path(run) / METRICS).exists():
        atomic_write(Path(run) / METRICS, lambda tmp: Path(tmp).write_text(""))


def save_checkpoint(out: Path, model: VAE, optimizer: torch.optim.Optimizer, state: LoopState,
                    parts: nn.Module | None = None, ema: Any = None, world_size: int = 1, spectral: Any = None,
                    cfg: Config | None = None, shares: dict[str, Any] | None = None, weights: bool = True) -> None:
    """model.safetensors (the weights evaluation and sampling use, the `ema` average where the run keeps one; not with
    `weights` False: an early-stopping run keeps its best epoch's there) first, then train_state.pt (everything to
    continue, weights included, the objective's own `parts`: a discriminator belongs to training, the `world_size`
    training, early stopping's standing): killed between the two, the state is behind the weights, and a resume
    trains that epoch again and writes both. `shares`: every rank's sums (`rank_sums`)."""
    settle(state)  # the steps still in flight on the device are counted first
    trained = [*model.parameters(), *(parts.parameters() if parts is not None else ())]
    if not bool(all_finite([p.detach() for p in trained])):  # once per checkpoint, not per step
        raise NonFiniteLossError(f"the weights are NaN or Inf after global step {state.step} (is the learning rate "
                                 f"too large?); {out} keeps its last checkpoint: continue from it {SMALLER_LR}")
    device = next(model.parameters()).device
    cuda_rng = {"cuda_rng": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {}
    own = {"parts": parts.state_dict()} if parts is not None else {}
    if ema is not None:
        own["ema"] = ema.state_dict()
    if spectral is not None:  # the power iteration's vectors (`training.spectral`)
        own["spectral"] = spectral.state_dict()
    own |= {"config": recorded_config(cfg)} if cfg is not None else {}  # what config.json must say on a resume
    if weights:
        write_weights(out, model, state, ema)
    own |= {"stopping": state.stopping.as_dict()} if state.stopping is not None else {}
    save_state(out, {"model": model.state_dict(), **own, "optimizer": optimizer.state_dict(), **cuda_rng,
                          "rng": torch.get_rng_state(), "epoch": state.epoch, "step": state.step,
                          "batch": state.batch, "sums": {k: torch.as_tensor(v).cpu() for k, v in state.sums.items()},
                          "skipped": state.skipped, "examples": state.examples, "oversized": state.oversized,
                          "world_size": world_size, **(shares or {})})


def write_weights(out: Path, model: nn.Module, state: LoopState, ema: Any = None) -> None:
    """model.safetensors: the weights (the `ema` average where the run keeps one) labelled with the epoch and step; its
    sha256 goes into early stopping's standing (saved with the state)."""
    with ema.swapped() if ema is not None else contextlib.nullcontext():
        digest = save_weights(out, model, metadata={"epoch": str(state.epoch), "step": str(state.step)})
    if state.stopping is not None:
        state.stopping.digest = digest


def rank_sums(state: LoopState, ctx: Context, device: torch.device) -> dict[str, Any] | None:
    """Every rank's running sums of the epoch and their examples, for rank 0's checkpoint (a collective: every rank
    calls it at the same step); None in one process, whose `sums` are all of them."""
    if not ctx.distributed:
        return None
    mine = torch.tensor([float(state.examples), *map(float, state.sums.values())], dtype=torch.float64, device=device)
    ranks = every_rank(mine, ctx).cpu()
    return {"rank_sums": ranks[:, 1:].float(), "rank_examples": [int(n) for n in ranks[:, 0].tolist()]}


def load_run(run: str | Path, model: nn.Module | None = None) -> tuple[Config, nn.Module]:
    """(config, model) of a run directory: the model rebuilt from config.json (or `model`, built by the
    caller, for a model built in Python) with the safetensors weights loaded, in eval mode."""
    run = Path(run)
    cfg = load_config(run)
    given = model is not None
    if model is None:
        if cfg.model.built_in_python:
            raise VaekitError(f"{run / CONFIG}: the model was built in Python, and code is never unpickled; "
                              "rebuild it and load the weights into it: vaekit.load(DIR, model=…)")
        if not cfg.model.data_shape:
            raise VaekitError(f"{run / CONFIG}: [model] data_shape is empty; the run was never trained")
        check_shapes_first(run, cfg)
        model = build_model(cfg.model)
    load_weights(run, model, given)
    model.eval()
    return cfg, model
