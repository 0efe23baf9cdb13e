"""Registries: one per kind of choice (priors, posteriors, likelihoods, architectures, objectives).

A registry maps a name to a factory. Config validation, the CLI's flags, `choices` and `--help`,
and the README's tables all read the registries, so a choice is written once: where its factory is
registered. Users add their own from Python (`@vaekit.register_prior("name")`) or from a file or
module given to `vaekit train --plugin`.

A factory is called with the keyword arguments it names, out of those the builder offers (for a
prior: `latent_dim`, `components`, `config`, `encoder`, …), so a user's factory asks only for what
it needs: `def laplace(latent_dim): return LaplacePrior(latent_dim)`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import VaekitError


@dataclass(frozen=True)
class Entry:
    name: str
    factory: Callable[..., Any]
    help: str  # one line, for --help and the README
    module: str  # where the factory was defined: a plugin's parts live outside vaekit

    @property
    def builtin(self) -> bool:
        return self.module == "vaekit" or self.module.startswith("vaekit.")


class Registry:
    """Named factories of one kind; `kind` names it in messages ("prior", "likelihood", …)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, factory: Callable[..., Any] | None = None, *, help: str | None = None):
        """Register `factory` under `name`; without `factory`, a decorator. The help line defaults to
        the first line of the factory's docstring. Re-registering a name replaces it (a plugin
        imported twice is harmless)."""

        def add(f: Callable[..., Any]) -> Callable[..., Any]:
            if not isinstance(name, str) or not name or not name.replace("-", "").replace("_", "").isalnum():
                raise VaekitError(f"{self.kind} name {name!r}: use letters, digits, '-' and '_'")
            line = help if help is not None else (inspect.getdoc(f) or "").split("\n")[0]
            self._entries[name] = Entry(name, f, line, getattr(f, "__module__", "") or "")
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

    def build(self, name: str, **offered: Any) -> Any:
        """Call the factory of `name` with those of the `offered` keyword arguments it accepts."""
        factory = self.entry(name).factory
        params = inspect.signature(factory).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            return factory(**offered)
        missing = [p for p, spec in params.items() if p not in offered and spec.default is inspect.Parameter.empty
                   and spec.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
        if missing:
            raise VaekitError(f"{self.kind} {name!r}: its factory asks for {', '.join(missing)}, which the builder "
                              f"does not offer (it offers {', '.join(offered)})")
        return factory(**{k: v for k, v in offered.items() if k in params})

    def help(self) -> str:
        """'name: help; name: help', for --help."""
        return "; ".join(f"{e.name}: {e.help}" if e.help else e.name for e in self._entries.values())
