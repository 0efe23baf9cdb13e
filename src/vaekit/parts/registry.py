"""Registries: one per kind of part (priors, posteriors, likelihoods, architectures, objectives), and the
settings each part declares.

A registry maps a name to a factory (a function or a class). A part's **settings** are the factory's
keyword parameters annotated with a `Setting`, each with its type, its default and a one-line help:

    @PRIORS.register("mog")
    def mog(latent_dim: int, components: Annotated[int, Setting("K, the Gaussians", above=0)] = 10):

That line is the only place the setting is written. The config table (`[model.prior] components = 10`),
the flag and its `--help`, the range check, the one-line refusal of a setting the chosen part does not
read, `config.json` and the README's registry table are all made from it, for built-in parts and
plugins alike. The factory's other parameters are the builder's wiring (`latent_dim`, `data_dim`,
`encoder`, …): offered by name, taken where the factory asks for them, never set by a user.
"""

from __future__ import annotations

import difflib
import inspect
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ..errors import VaekitError

MAX_COUNT = 2**40  # sizes and counts: beyond any memory, still far from an integer overflow in torch
FLOAT32_MAX = 3.4028234663852886e38  # a part's float setting becomes a float32 tensor: beyond this it overflows
FLOAT32_TINY = 1.1754943508222875e-38  # and below this (a setting > 0) it is denormal or 0


@dataclass(frozen=True)
class Setting:
    """What a part says of one of its settings, beside its type and default: a one-line help, a range
    (`above` exclusive, `at_least`/`at_most` inclusive), the allowed `choices`, and the flag (default:
    `--name-with-dashes`). Put it in the parameter's annotation: `Annotated[float, Setting(…)]`."""

    help: str
    above: float | None = None
    at_least: float | None = None
    at_most: float | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None


@dataclass(frozen=True)
class Declared:
    """One setting of one part: its name, type (bool, int, float, str, tuple[int, ...], or X | None),
    default and `Setting`."""

    name: str
    type: Any
    default: Any
    spec: Setting

    @property
    def flag(self) -> str:
        """`Setting.flag`, else --name-with-dashes; "" for a setting with no flag."""
        return self.spec.flag if self.spec.flag is not None else "--" + self.name.replace("_", "-")

    @property
    def optional(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def base(self) -> Any:
        """The type without its `| None`."""
        return next(a for a in typing.get_args(self.type) if a is not type(None)) if self.optional else self.type

    def check(self, value: Any, where: str) -> Any:
        """`value` as this setting takes it (a JSON list as a tuple, an int as a float), or a one-line
        error naming `where` and the value."""
        if value is None and self.optional:
            return None
        value = coerce(value, self.base, where)
        s = self.spec
        numbers = [value] if isinstance(value, (int, float)) and not isinstance(value, bool) else \
            list(value) if isinstance(value, tuple) else []
        for v in numbers:
            if isinstance(v, float) and not math.isfinite(v):
                raise VaekitError(f"{where} must be finite{' and ' + self.range() if self.range() != 'any value' else ''}, "
                                  f"got {v!r}")
            if isinstance(v, int) and s.at_most is None and abs(v) > MAX_COUNT:
                raise VaekitError(f"{where} = {v} is out of range (at most {MAX_COUNT})")
            if isinstance(v, float) and s.at_most is None and abs(v) > FLOAT32_MAX:  # a part computes in float32
                raise VaekitError(f"{where} = {v:g} is out of range (float32 holds at most {FLOAT32_MAX:.4g})")
            if isinstance(v, float) and s.above == 0 and 0 < v < FLOAT32_TINY:  # 0 (or denormal) once in float32
                raise VaekitError(f"{where} = {v:g} is out of range (float32's smallest normal number is "
                                  f"{FLOAT32_TINY:.4g}; a setting that must be > 0 cannot be smaller)")
            if (s.above is not None and not v > s.above) or (s.at_least is not None and not v >= s.at_least) or \
                    (s.at_most is not None and not v <= s.at_most):
                raise VaekitError(f"{where} must be {self.range()}, got {v!r}")
        if s.choices is not None and value not in s.choices:
            raise VaekitError(f"{where} = {value!r} is not one of {', '.join(s.choices)}")
        return value

    def range(self) -> str:
        s = self.spec
        def shown(v: float) -> str:  # a whole bound as the number it is (a seed's 9223372036854775807, not 9.22337e+18)
            return str(int(v)) if float(v).is_integer() and abs(v) < 2**64 else f"{v:g}"
        parts = [f"> {shown(s.above)}"] if s.above is not None else []
        parts += [f">= {shown(s.at_least)}"] if s.at_least is not None else []
        parts += [f"<= {shown(s.at_most)}"] if s.at_most is not None else []
        return " and ".join(parts) or "any value"


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check `value` against a type: JSON lists become tuples (one int stands for a one-item tuple of
    ints), ints are accepted as floats; booleans are never numbers; a type with `from_plain` (a table's
    `Schema`) reads its own JSON form."""
    if hasattr(hint, "from_plain"):
        return hint.from_plain(value, where)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if isinstance(value, int) and item is int and not isinstance(value, bool):
            value = [value]
        if not (isinstance(value, (list, tuple)) and all(isinstance(v, item) and not isinstance(v, bool) for v in value)):
            kind = "integers" if item is int else "strings"
            raise VaekitError(f"{where}: expected a list of {kind}, got {value!r}")
        return tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint) or (hint in (int, float) and isinstance(value, bool)):
        raise VaekitError(f"{where}: expected {hint.__name__}, got {type(value).__name__} {value!r}")
    return value


@dataclass(frozen=True)
class Choice:
    """A registered part chosen by name with every one of its settings: what a config holds for a slot
    (`cfg.model.prior.name`, `cfg.model.prior["components"]`). Written to config.json as
    `{"name": …, setting: value, …}`; a bare name stands for the part with its defaults."""

    name: str
    settings: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, key: str) -> Any:
        return dict(self.settings)[key]

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, **dict(self.settings)}

    def __str__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.settings)
        return f"{self.name}({inner})" if inner else self.name


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    help: str  # one line, for --help and the README
    module: str  # where the factory was defined: a plugin's parts live outside vaekit
    settings: dict[str, Declared] = field(default_factory=dict)  # what a user may set, by name
    wiring: tuple[str, ...] = ()  # the factory's other parameters: what the builder offers

    @property
    def builtin(self) -> bool:
        return self.module == "vaekit" or self.module.startswith("vaekit.")


def declared_settings(factory: Callable[..., Any]) -> tuple[dict[str, Declared], tuple[str, ...]]:
    """(settings, wiring) of a factory: its parameters annotated with a `Setting`, and the others."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    hints = typing.get_type_hints(target, include_extras=True)
    settings, wiring = {}, []
    for name, p in inspect.signature(factory).parameters.items():
        if p.kind in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL):
            continue
        hint = hints.get(name)
        spec = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Setting)), None)
        if spec is None:
            wiring.append(name)
            continue
        if p.default is inspect.Parameter.empty:
            raise VaekitError(f"{getattr(factory, '__qualname__', factory)}: setting {name!r} needs a default")
        declared = Declared(name, typing.get_args(hint)[0], p.default, spec)
        declared.check(p.default, f"{getattr(factory, '__qualname__', factory)}: the default of {name}")
        settings[name] = declared
    return settings, tuple(wiring)


def closest(name: str, known: typing.Iterable[str]) -> str:
    """'; did you mean …?' or '; it takes …', for a refusal of an unknown name."""
    known = sorted(known)
    match = difflib.get_close_matches(name, known, n=1)
    if match:
        return f"; did you mean {match[0]!r}?"
    return f"; it takes {', '.join(known)}" if known else "; it takes none"


class Registry:
    """Named factories of one kind; `kind` names it in messages ("prior", "likelihood", …)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, help: str | None = None):
        """Register `factory` under `name`; without `factory`, a decorator. The help line defaults to
        the first line of the factory's docstring. Re-registering a name replaces it (a plugin
        imported twice is harmless)."""

        if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
            raise VaekitError(f"{self.kind} name {name!r:.40}: use letters, digits, '-' and '_'")

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            line = help if help is not None else (inspect.getdoc(f) or "").split("\n")[0]
            settings, wiring = declared_settings(f)
            self._entries[name] = Entry(name, f, line, getattr(f, "__module__", "") or "", settings, wiring)
            return f

        return add(factory) if factory is not None else add

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise VaekitError(f"unknown {self.kind} {name!r}; choose from {', '.join(self._entries)} "
                              "(or register one: see --plugin)")
        return self._entries[name]

    def choose(self, value: str | Mapping[str, Any] | Choice, where: str | None = None) -> Choice:
        """The `Choice` a config value names: a name, {"name": …, setting: value, …}, or a Choice. Every
        setting not given takes the part's default; an unknown one is refused naming the closest."""
        where = where or self.kind
        if isinstance(value, Choice):
            value = value.as_dict()
        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, Mapping) and "name" not in value:
            raise VaekitError(f"{where}: no name (choose one of {', '.join(self._entries)}), got {dict(value)!r:.200}")
        if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
            article = "an" if self.kind[:1] in "aeiou" else "a"
            raise VaekitError(f"{where}: expected {article} {self.kind} name or a table with its name and settings, got "
                              f"{value!r:.200}")
        if value["name"] not in self._entries:
            raise VaekitError(f"{where} name = {value['name']!r} is not one of {', '.join(self._entries)}")
        entry = self._entries[value["name"]]
        given = {k: v for k, v in value.items() if k != "name"}
        for key in given:
            if key not in entry.settings:
                raise VaekitError(f"{where}: {self.kind} {entry.name!r} has no setting {key!r}"
                                  f"{closest(key, entry.settings)}")
        resolved = {n: d.check(given.get(n, d.default), f"{where} {n}") for n, d in entry.settings.items()}
        return Choice(entry.name, tuple(resolved.items()))

    def build(self, name: str | Mapping[str, Any] | Choice, given: Mapping[str, Any] | None = None, /,
              **offered: Any) -> Any:
        """The part `name` (a name, a table or a `Choice`) built with its settings: `given` (a user's
        keywords: each must be a setting or parameter of the factory, else refused naming the closest)
        over the choice's, over the defaults; `offered`: the builder's wiring, passed where asked for."""
        given = dict(given or {})
        choice = name if isinstance(name, Choice) else self.choose(name) if not isinstance(name, str) else None
        entry = self.entry(choice.name if choice else name)
        for key in given:
            if key not in entry.settings and key not in entry.wiring:
                raise VaekitError(f"{self.kind} {entry.name!r} takes no {key!r}"
                                  f"{closest(key, [*entry.settings, *entry.wiring])}")
        chosen = dict(choice.settings) if choice else {}
        settings = {n: d.check(given[n], f"{self.kind} {entry.name!r}: {n}") if n in given else chosen.get(n, d.default)
                    for n, d in entry.settings.items()}
        wiring = {k: v for k, v in {**offered, **given}.items() if k in entry.wiring}
        params = inspect.signature(entry.factory).parameters
        missing = [p for p in entry.wiring if p not in wiring and params[p].default is inspect.Parameter.empty]
        if missing:
            raise VaekitError(f"{self.kind} {entry.name!r}: its factory asks for {', '.join(missing)}, which the builder "
                              f"does not offer (it offers {', '.join(offered) or 'nothing'})")
        if entry.builtin:
            return entry.factory(**wiring, **settings)
        try:  # a plugin's factory is the user's code: its failure is named, not a traceback from inside vaekit
            part = entry.factory(**wiring, **settings)
        except VaekitError:
            raise
        except Exception as e:  # noqa: BLE001 - whatever the plugin raises
            said = str(e).splitlines()[0] if str(e) else ""
            raise VaekitError(f"{self.kind} {entry.name!r} (plugin {entry.module}): its factory raised "
                              f"{type(e).__name__}{': ' + said if said else ''}") from None
        if not isinstance(part, nn.Module):
            raise VaekitError(f"{self.kind} {entry.name!r} (plugin {entry.module}): its factory returned "
                              f"{type(part).__name__}, not a torch module")
        return part

    def help(self) -> str:
        """'name: help; name: help', for --help."""
        return "; ".join(f"{e.name}: {e.help}" if e.help else e.name for e in self._entries.values())


def differing(section: str, name: str, old: Any, new: Any) -> tuple[str, Any, Any]:
    """(where, old, new) for a setting whose two values differ; in a part's table (`Choice.as_dict`) the first
    setting that differs, the part's name first: ("train", "objective", …) → ("[train.objective] beta", 1.0, 2.0)."""
    if old == new or not (isinstance(old, dict) and isinstance(new, dict)):
        return f"[{section}] {name}", old, new
    key = next(k for k in sorted(set(old) | set(new), key=lambda k: (k != "name", k)) if old.get(k) != new.get(k))
    return f"[{section}.{name}] {key}", old.get(key), new.get(key)
