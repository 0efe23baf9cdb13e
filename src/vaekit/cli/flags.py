"""The train flags, made from the config's fields and the settings every registered part declares, the
config they resolve to, and the README's table of parts (the same declarations, rendered)."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from ..errors import VaekitError
from ..parts.registry import Choice, Declared
from ..runs.checkpoint import CONFIG, load_config
from ..runs.config import SECTIONS, Config, declared, merge, settings, slot_registry, slots
from ..runs.config_files import load_config_file

log = logging.getLogger(__name__)

RECORDED = ("digest", "size")  # [data]: what vaekit records of the data it trains on, never a setting of the user's
PYTHON_ONLY = ("built_in_python", "python_parts", "unknown")  # [model]: what it records of a model built in Python
FLAGS = "command line"  # the source a config built from flags names in its refusals (`flag_named` reads them)


def part_flags() -> dict[str, tuple[str, str, Declared, list[str]]]:
    """flag → (section, slot, the setting, the parts that declare it) for every setting of every registered
    part. Parts of one slot share a flag when they share the setting's name and type; a flag claimed
    twice otherwise is refused in one line (a plugin gives its setting `Setting(flag=…)`)."""
    flags: dict[str, tuple[str, str, Declared, list[str]]] = {}
    general = {declared(SECTIONS[sec])[f.name].flag for sec, f in settings()}
    for section, name, registry in slots():
        for entry in map(registry.entry, registry.names()):
            for d in entry.settings.values():
                have = flags.get(d.flag)
                if have is None and d.flag not in general:
                    flags[d.flag] = (section, name, d, [entry.name])
                elif have is not None and have[:2] == (section, name) and have[2].name == d.name and have[2].type == d.type:
                    have[3].append(entry.name)
                else:
                    owner = f"{have[1]} {', '.join(have[3])}" if have else "a setting of the run"
                    raise VaekitError(f"{registry.kind} {entry.name!r}: its setting {d.name!r} would take the flag "
                                      f"{d.flag}, which is {owner}'s; give it another (Setting(flag=…))")
    return flags


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per config field (`--latent-dim`, `--prior`, …) and per part setting (`--prior-components`,
    `--gamma`, …), with the type, choices, range and help their declarations give. Defaults are None,
    so only given flags override."""
    for section, f in settings():
        d = declared(SECTIONS[section])[f.name]
        flag = d.flag
        if flag == "":
            continue
        registry = f.metadata.get("registry")
        if registry is not None:
            text = f"{d.spec.help} ({registry.help()}) (default: {f.default.name})".replace("%", "%%")
            p.add_argument(flag, dest=f"{section}.{f.name}", choices=registry.names(), default=None, help=text)
        else:
            _add(p, flag, f"{section}.{f.name}", d, d.spec.help + f" (default: {_shown(d.default)})")
    for flag, (section, name, d, parts) in part_flags().items():
        registry = slot_registry(section, name)
        defaults = {_shown(registry.entry(part).settings[d.name].default) for part in parts}
        default = defaults.pop() if len(defaults) == 1 else ", ".join(
            f"{part}: {_shown(registry.entry(part).settings[d.name].default)}" for part in parts)
        _add(p, flag, f"{section}.{name}.{d.name}", d, f"--{name} {' or '.join(parts)}: {d.spec.help} (default: {default})")


def _add(p: argparse.ArgumentParser, flag: str, dest: str, d: Declared, help_text: str) -> None:
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": help_text.replace("%", "%%")}
    base = d.base
    if base is bool:
        p.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
    elif getattr(base, "__origin__", None) is tuple:
        p.add_argument(flag, type=base.__args__[0], action="append", metavar=d.name.upper(), **kwargs)
    else:
        p.add_argument(flag, type=base, choices=d.spec.choices, metavar=None if d.spec.choices else d.name.upper(),
                       **kwargs)


def _shown(default: Any) -> str:
    """A setting's default as a user types it."""
    if isinstance(default, Choice):
        return default.name
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return " ".join(map(str, default)) or "none"
    return f"{default:g}" if isinstance(default, float) else str(default)


def flag_values(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The flags given, as a config update: {section: {field: value, slot: {"name": …, setting: value}}}."""
    update: dict[str, dict[str, Any]] = {}
    for dest, value in vars(args).items():
        if value is None or dest.count(".") not in (1, 2):
            continue
        section, name, *setting = dest.split(".")
        value = list(value) if isinstance(value, list) else value
        if setting:
            update.setdefault(section, {}).setdefault(name, {})[setting[0]] = value
        elif isinstance(update.get(section, {}).get(name), dict):
            update[section][name]["name"] = value
        else:
            update.setdefault(section, {})[name] = {"name": value} if slot_registry(section, name) else value
    return update


def build_config(args: argparse.Namespace) -> Config:
    """defaults < --config file < flags; with --resume the run's saved config stands for the defaults, so a
    setting of its own parts (--gamma of a FactorVAE run) is read as that part's, not the default ELBO's."""
    merged: dict[str, dict[str, Any]] = Config().to_dict()
    saved = Path(args.out) / CONFIG if getattr(args, "resume", False) and getattr(args, "out", None) else None
    file_cfg = _config_file(args.config, say=True) if args.config else {}
    if args.config and not isinstance(file_cfg, dict) or not all(isinstance(v, dict) for v in file_cfg.values()):
        Config.from_dict(file_cfg, source=str(args.config))  # refused, naming the file
    init = getattr(args, "train.init_from", None) or (file_cfg.get("train") or {}).get("init_from")
    if saved is not None and saved.is_file():
        merged = load_config(saved.parent).to_dict()
    elif init:  # a new run from another's weights (the flag, or the --config file): that run's settings by default
        merged = load_config(Path(init)).to_dict()
    if args.config:  # checked over what it changes: a part's table without a name keeps the part ([train.objective]
        merged = merge(merged, file_cfg)  # beta = 4: the default ELBO's, or the resumed run's objective)
        Config.from_dict(merged, source=str(args.config))  # checks keys and types, names the file
    try:
        return Config.from_dict(merge(merged, flag_values(args)), source=FLAGS)
    except VaekitError as e:  # every value but a flag's was checked before: name the flag the user typed
        raise VaekitError(flag_named(str(e), resumed=saved is not None and saved.is_file())) from None


def flag_named(message: str, resumed: bool = False) -> str:
    """A refusal of `Config.from_dict(…, source=FLAGS)`, "command line: [train.objective] k must be …", as the user
    wrote the value: "--train-k must be …". `resumed`: a setting of another part is not advised to choose that part,
    which a --resume refuses."""
    named = {f"{FLAGS}: [{section}] {f.name} ": declared(SECTIONS[section])[f.name].flag for section, f in settings()}
    named |= {f"{FLAGS}: [{section}.{name}] {d.name} ": flag for flag, (section, name, d, _) in part_flags().items()}
    where = next((w for w in named if message.startswith(w) and named[w]), None)
    if where is not None:
        return f"{named[where]} {message[len(where):]}"
    other = re.match(rf"{FLAGS}: \[(\w+)\.(\w+)\]: \w+ '([^']+)' has no setting '(\w+)'", message)
    owner = other and next(((flag, parts) for flag, (section, name, d, parts) in part_flags().items()
                            if (section, name, d.name) == other.group(1, 2, 4)), None)
    if not owner:
        return message
    slot = declared(SECTIONS[other.group(1)])[other.group(2)].flag
    remedy = f"; the run's {slot} cannot change on --resume" if resumed else f": add {slot} {' or '.join(owner[1])}"
    return f"{owner[0]} is a setting of {slot} {' or '.join(owner[1])}, not of {other.group(3)}{remedy}"


def given_settings(args: argparse.Namespace) -> dict[tuple[str, str], str | None]:
    """The (section, field) settings the user set, by a flag or in --config: what a --resume may change
    (a part's settings count as its slot), each with the --config file it came from (None: a flag, which the user
    typed and a refusal need not name)."""
    given: dict[tuple[str, str], str | None] = {}
    if args.config:
        given |= {(section, name): str(args.config) for section, values in _config_file(args.config).items()
                  if isinstance(values, dict) for name in values}
    return given | {(section, name): None for section, values in flag_values(args).items() for name in values}


def _config_file(path: str, say: bool = False) -> dict[str, Any]:
    """A --config file's settings; [data] digest and size (a run's config.json given as one holds them) are what
    vaekit records of the data it trains on, not settings: left out, and `say`ing so. [model] built_in_python,
    python_parts and unknown set (a vaekit.fit run's) are refused: no command could open a run trained from them."""
    d = load_config_file(path)
    model = d.get("model") if isinstance(d, dict) else None
    python = [k for k in PYTHON_ONLY if isinstance(model, dict) and model.get(k)]  # a normal run's: false and []
    if python:
        raise VaekitError(f"{path}: [model] {python[0]} is written by vaekit for a model built in Python (vaekit.fit), "
                          "not a setting: no run trained from it could be opened; remove it")
    data = d.get("data") if isinstance(d, dict) else None
    if isinstance(data, dict) and any(k in data for k in RECORDED):
        d = {**d, "data": {k: v for k, v in data.items() if k not in RECORDED}}
        recorded = [k for k in RECORDED if data.get(k) not in (None, "")]  # a named dataset's run records none
        if say and recorded:
            log.warning("%s: [data] %s: recorded by vaekit of the data it trains on, not %s; not used", path,
                        " and ".join(recorded), "a setting" if len(recorded) == 1 else "settings")
    return d


def registry_tables() -> str:
    """The README's table of every built-in registered part, one row per name, with the settings it declares
    (a test keeps the README equal to it)."""
    rows = ["| flag | name | what it is | its settings (flag, default) |", "|---|---|---|---|"]
    for _, name, registry in slots():
        for e in map(registry.entry, registry.names()):
            if e.builtin:
                own = "; ".join(f"`{d.flag}` {_shown(d.default)}" for d in e.settings.values()) or "—"
                rows.append(f"| `--{name}` | `{e.name}` | {e.help} | {own} |")
    return "\n".join(rows) + "\n"


__all__ = ["add_setting_flags", "build_config", "given_settings", "registry_tables"]
