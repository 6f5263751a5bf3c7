"""The plug-in registry: YAML `type:` (or step/check key) → config model and implementation.

`core` knows no plug-in by name. Plug-ins register themselves when `sluiceway.plugins`
imports them; the loader and the runner look them up here.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

PluginKind = Literal["source", "step", "check", "sink"]


@dataclass(frozen=True)
class Plugin:
    """A registered plug-in: its kind, name, config model and implementation factory."""

    kind: PluginKind
    name: str
    config: type[BaseModel]
    impl: Callable[..., Any]
    aliases: tuple[str, ...] = ()


_PLUGINS: dict[PluginKind, dict[str, Plugin]] = {"source": {}, "step": {}, "check": {}, "sink": {}}


def register(
    kind: PluginKind,
    name: str,
    config: type[BaseModel],
    impl: Callable[..., Any],
    *,
    aliases: tuple[str, ...] = (),
) -> Plugin:
    """Register a plug-in under `name` (and `aliases`) for `kind`; returns it."""
    plugin = Plugin(kind=kind, name=name, config=config, impl=impl, aliases=aliases)
    for key in (name, *aliases):
        _PLUGINS[kind][key] = plugin
    return plugin


def lookup(kind: PluginKind, name: str) -> Plugin | None:
    """The plug-in registered as `name` for `kind`, or None."""
    _load_builtins()
    return _PLUGINS[kind].get(name)


def names(kind: PluginKind) -> list[str]:
    """Every registered name (aliases included) of `kind`, sorted."""
    _load_builtins()
    return sorted(_PLUGINS[kind])


def canonical(kind: PluginKind) -> list[Plugin]:
    """Each plug-in of `kind` once, in name order."""
    _load_builtins()
    unique = {p.name: p for p in _PLUGINS[kind].values()}
    return [unique[n] for n in sorted(unique)]


def closest(name: str, candidates: list[str]) -> str | None:
    """The candidate `name` most likely meant, or None when none is close."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def did_you_mean(name: str, candidates: list[str]) -> str:
    """A ' Did you mean ...?' suffix for the closest candidate, or ''."""
    close = closest(name, candidates)
    return f" Did you mean '{close}'?" if close else ""


def _load_builtins() -> None:
    import sluiceway.plugins  # noqa: F401  (registers the built-in plug-ins on import)
