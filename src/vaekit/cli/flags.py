"""The train flags, one per config setting, and the config they resolve to."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any

from ..parts.registry import Registry
from ..runs.config import SECTIONS, Config, load_config_file, settings


def build_config(args: argparse.Namespace) -> Config:
    """defaults < --config file < flags."""
    merged: dict[str, dict[str, Any]] = Config().to_dict()
    if args.config:
        file_cfg = load_config_file(args.config)
        Config.from_dict(file_cfg, source=str(args.config))  # checks keys and types, names the file
        for section, values in file_cfg.items():
            merged[section].update(values)
    for section, f in settings():
        value = getattr(args, f.name, None)
        if value is not None:
            merged[section][f.name] = list(value) if isinstance(value, list) else value
    return Config.from_dict(merged, source="command line")


def given_settings(args: argparse.Namespace) -> set[tuple[str, str]]:
    """The (section, name) settings the user set, by a flag or in --config: what a --resume may change."""
    given = {(section, f.name) for section, f in settings() if getattr(args, f.name, None) is not None}
    if args.config:
        given |= {(section, name) for section, values in load_config_file(args.config).items()
                  if isinstance(values, dict) for name in values}
    return given


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per config setting (`--latent-dim`, `--prior`, …), its type, choices and help taken from
    the config's fields and the registries. Defaults are None, so only given flags override."""
    hints = {name: typing.get_type_hints(cls) for name, cls in SECTIONS.items()}
    for section, f in settings():
        flag = f.metadata.get("flag")
        if flag == "":
            continue
        flag = flag or "--" + f.name.replace("_", "-")
        hint = hints[section][f.name]
        optional = type(None) in typing.get_args(hint)  # X | None: the flag takes an X
        base = next(a for a in typing.get_args(hint) if a is not type(None)) if optional else hint
        choices = f.metadata.get("choices")
        help_text = f.metadata["help"]
        if isinstance(choices, Registry):
            help_text += " (" + choices.help().replace("%", "%%") + ")"
            choices = choices.names()
        help_text += f" (default: {_shown(f)})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if base is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif typing.get_origin(base) is tuple:
            p.add_argument(flag, type=typing.get_args(base)[0], action="append", **kwargs)
        else:
            p.add_argument(flag, type=base, choices=choices, **kwargs)


def _shown(f) -> str:
    """A setting's default as a user types it."""
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return " ".join(map(str, default)) or "none"
    return str(default).replace("%", "%%")
