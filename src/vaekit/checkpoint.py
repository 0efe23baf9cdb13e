"""The run directory: config.json, model.safetensors, train_state.pt, metrics.jsonl.

Every file is written to a temporary file in the same directory and then `os.replace`d, so a
crash leaves either the old file or the new one, never half of one. Weights are read only through
safetensors and the trainer state only with `torch.load(weights_only=True)`: nothing we load can
run code. The architecture is rebuilt from config.json, never unpickled.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from .config import Config
from .errors import VaekitError

_UMASK = os.umask(0)
os.umask(_UMASK)
CONFIG, WEIGHTS, STATE, METRICS = "config.json", "model.safetensors", "train_state.pt", "metrics.jsonl"


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Call write(tmp_path), fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the permissions open() would
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions() -> dict[str, str]:
    from . import __version__

    return {"vaekit": __version__, "torch": torch.__version__}


def save_config(run: Path, cfg: Config) -> None:
    text = json.dumps({**cfg.to_dict(), "versions": versions()}, indent=2) + "\n"
    atomic_write(run / CONFIG, lambda tmp: Path(tmp).write_text(text))


def load_config(run: Path) -> Config:
    path = Path(run) / CONFIG
    if not Path(run).is_dir():
        raise VaekitError(f"{run}: no such run directory")
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise VaekitError(f"{path}: missing; is {run} a vaekit run directory?") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise VaekitError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise VaekitError(f"{path}: expected a JSON object")
    written_by = str((d.pop("versions", None) or {}).get("vaekit", "0"))
    if _version_tuple(written_by) > _version_tuple(versions()["vaekit"]):
        raise VaekitError(f"{path}: written by vaekit {written_by}, newer than this vaekit {versions()['vaekit']}; "
                          "upgrade vaekit to read it")
    return Config.from_dict(d, source=str(path))


def _version_tuple(v: str) -> tuple[int, ...]:
    parts = []
    for piece in v.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def save_weights(run: Path, model: nn.Module, metadata: dict[str, str] | None = None) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(run / WEIGHTS, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_weights(run: Path, model: nn.Module) -> None:
    path = Path(run) / WEIGHTS
    try:
        tensors = load_file(path)
    except FileNotFoundError:
        raise VaekitError(f"{path}: missing") from None
    except Exception as e:  # noqa: BLE001 - safetensors raises several types for corrupt files
        raise VaekitError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        diff = sorted(set(expected.items()) ^ set(found.items()))[:3]
        raise VaekitError(f"{path}: weights do not match the architecture in {CONFIG} (first differences: {diff})")
    model.load_state_dict(tensors)


def save_state(run: Path, state: dict[str, Any]) -> None:
    atomic_write(run / STATE, lambda tmp: torch.save(state, tmp))


def load_state(run: Path) -> dict[str, Any]:
    path = Path(run) / STATE
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise VaekitError(f"{path}: missing; nothing to resume") from None
    except Exception as e:  # noqa: BLE001 - unpickling refusals and corrupt archives come as many types
        raise VaekitError(f"{path}: cannot load trainer state safely ({type(e).__name__}: {str(e).splitlines()[0]})") from None


def append_metrics(run: Path, record: dict[str, Any]) -> None:
    with open(Path(run) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")


def truncate_metrics(run: Path, epochs: int) -> list[dict[str, Any]]:
    """Keep the lines of epochs ≤ `epochs` (those a checkpoint covers) and return them."""
    kept = [r for r in read_metrics(run) if r.get("epoch", 0) <= epochs]
    text = "".join(json.dumps(r) + "\n" for r in kept)
    atomic_write(Path(run) / METRICS, lambda tmp: Path(tmp).write_text(text))
    return kept


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = Path(run) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
