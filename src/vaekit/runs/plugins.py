"""Plugins: a file or module that registers parts (`@vaekit.register_prior("name")`, …).

`vaekit train --plugin my_parts.py` imports it before the config is read, so its names are valid
choices; the run records which plugins its parts came from. Code is never imported because a run
directory says so: `evaluate`, `sample`, `plot`, … on such a run need `--plugin` again, and without
it they refuse in one line naming the plugin.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ..errors import PluginError
from ..files import kind_of

_LOADED: dict[str, str] = {}  # module name → the spec it was loaded from (a file path or a module name)


def load_plugin(spec: str) -> str:
    """Import a plugin: a path to a .py file, or the name of an importable module. Returns the module
    name. Loading the same plugin twice imports it once."""
    if not isinstance(spec, str):
        raise PluginError(f"load_plugin: name a .py file or an importable module, got {type(spec).__name__}")
    if not spec.strip():
        raise PluginError("--plugin is empty: name a .py file or an importable module")
    path = Path(spec)
    if spec.endswith(".py") or path.exists():
        if not path.is_file():
            raise PluginError(f"--plugin {spec}: " + (f"not a regular file ({kind_of(path.stat().st_mode)})"
                                                      if path.exists() else "no such file"))
        name = f"vaekit_plugin_{path.stem}"
        if name in sys.modules and _LOADED.get(name) == str(path.resolve()):
            return name
        module_spec = importlib.util.spec_from_file_location(name, path)
        if module_spec is None or module_spec.loader is None:
            raise PluginError(f"--plugin {spec}: not an importable Python file")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        _run(lambda: module_spec.loader.exec_module(module), spec)
        _LOADED[name] = str(path.resolve())
        return name
    _run(lambda: importlib.import_module(spec), spec)
    _LOADED[spec] = spec
    return spec


def _run(fn, spec: str) -> None:
    try:
        fn()
    except PluginError:
        raise
    except Exception as e:  # noqa: BLE001 - a plugin's own error, named in one line
        raise PluginError(f"--plugin {spec}: importing it failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def source_of(module: str) -> str:
    """How a run records the plugin that defined `module`: the file name it was loaded from
    (`my_parts.py`), or the module's name."""
    origin = _LOADED.get(module)
    if origin is not None and origin.endswith(".py"):
        return Path(origin).name
    return module


def is_loaded(recorded: str) -> bool:
    """Whether the plugin a run records (a file name or a module name) was loaded in this process."""
    return any(source_of(m) == recorded or m == recorded for m in _LOADED) or (
        not recorded.endswith(".py") and recorded in sys.modules)
