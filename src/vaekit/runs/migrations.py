"""config.json files written by older vaekit, read as today's: 0.2's flat keys moved into their parts' tables
(`migrate`), and 0.3's count likelihoods that fed the encoder raw counts (`raw_count_inputs`)."""

from __future__ import annotations

from typing import Any

from .config import MOVED, SECTIONS, slot_registry


def migrate(d: dict[str, Any]) -> dict[str, Any]:
    """A config.json written by vaekit 0.2 in today's layout: each flat key of `MOVED` goes into its part's
    table where the chosen part reads it (0.2 stored every setting, read or not), else it is dropped."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in d.items()}
    for (section, key), (slot_name, setting_name) in MOVED.items():
        values = out.get(section)
        if not isinstance(values, dict) or key not in values:
            continue
        value = values.pop(key)
        registry = slot_registry(section, slot_name)
        current = values.get(slot_name, getattr(SECTIONS[section](), slot_name).name)
        current = {"name": current} if isinstance(current, str) else dict(current)
        if current.get("name") in registry and setting_name in registry.entry(current["name"]).settings and value is not None:
            current[setting_name] = value
        values[slot_name] = current
    return out


def raw_count_inputs(d: dict[str, Any]) -> dict[str, Any]:
    """A config.json written before vaekit 0.4, whose count likelihoods fed the encoder raw counts: the same
    model now (`data_scale = false`), not the log(1 + x) input and data-scaled rates 0.4's count likelihoods default to."""
    model = d.get("model")
    if not isinstance(model, dict):
        return d
    likelihood = model.get("likelihood")
    table = {"name": likelihood} if isinstance(likelihood, str) else likelihood
    if isinstance(table, dict) and table.get("name") in ("poisson", "negative-binomial") and "data_scale" not in table:
        model["likelihood"] = {**table, "data_scale": False}
    return d
