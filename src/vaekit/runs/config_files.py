"""Config files as the user writes them: TOML or JSON, read into a dict that `Config.from_dict` then checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import VaekitError
from ..files import json_loads, read_capped


def _once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json keeps the last of two silently; TOML refuses them)."""
    d = dict(pairs)
    if len(d) < len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"the key {twice!r:.80} is given twice")
    return d


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config into a dict (checked later by `Config.from_dict`)."""
    path = Path(path)
    try:
        text = read_capped(path)
    except OSError as e:
        raise VaekitError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        if path.suffix == ".toml":
            import tomllib

            d = tomllib.loads(text.decode())
        else:
            d = json_loads(text, object_pairs_hook=_once)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # TOML's nesting: a RecursionError
        why = "nested too deeply" if isinstance(e, RecursionError) else \
            "a whole number of more than 4,300 digits" if "integer string conversion" in str(e) else e  # TOML's int()
        raise VaekitError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'JSON'} ({why})") from None
    if isinstance(d, dict):
        d.pop("versions", None)  # a run's own config.json: the versions that wrote it are not settings
    return d
