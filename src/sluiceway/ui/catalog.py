"""The project's datasets and their lineage, read from the specs (never from the data).

A dataset is a source or a sink of a spec, named by its resolved location: a local path
relative to the spec's folder, an object-store URI, or `type:table` for database tables.
Two pipelines are linked when one's source resolves to another's sink. Only names, columns,
types, descriptions, PII methods and owners are read: never options, DSNs or credentials.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from deltalake import DeltaTable

from sluiceway.core.loader import load_spec
from sluiceway.core.spec import Pipeline
from sluiceway.errors import SluicewayError

_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.\-]*://)[^/@\s]+@", re.IGNORECASE)
_SECRET_PAIR = re.compile(r"(?i)\b(password|passwd|pwd|secret|token|api_key|key)=([^\s&;]+)")


def redact(text: str) -> str:
    """`text` without URL credentials (`user:pass@`) or `password=`-style values."""
    return _SECRET_PAIR.sub(r"\1=***", _USERINFO.sub(r"\g<scheme>***@", text))


@dataclass(frozen=True)
class Column:
    """One column of a dataset as the catalog shows it."""

    name: str
    type: str
    description: str | None = None
    pii: str | None = None


@dataclass
class Dataset:
    """A table or file set that specs read or write."""

    key: str
    label: str
    kind: str
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    columns: list[Column] = field(default_factory=list)
    owners: list[str] = field(default_factory=list)
    freshness_target: str | None = None


@dataclass(frozen=True)
class LoadedSpec:
    """A spec file and its pipeline, or the reason it could not be loaded."""

    path: Path
    pipeline: Pipeline | None
    problem: str | None = None


class SpecCatalog:
    """The project's specs, reloaded when a file changes (by modification time).

    Args:
        paths: spec files.
        root: the project folder, for short dataset labels.
    """

    def __init__(
        self,
        paths: list[Path],
        root: Path,
        *,
        discover: Callable[[], list[Path]] | None = None,
    ) -> None:
        self.paths = paths
        self.root = root.resolve()
        self.discover = discover
        self._cache: dict[Path, tuple[float, LoadedSpec]] = {}
        self._lock = threading.Lock()

    def specs(self) -> list[LoadedSpec]:
        """Every spec, loaded (or with its problem), in file order: the files given, and
        those the project's `specs:` patterns match now (a spec added later shows)."""
        paths = self.paths
        if self.discover is not None:
            with contextlib.suppress(OSError, SluicewayError):
                paths = sorted({*paths, *self.discover()})
        with self._lock:
            return [self._load(path) for path in paths]

    def _load(self, path: Path) -> LoadedSpec:
        try:
            mtime = path.stat().st_mtime
        except OSError:
            return LoadedSpec(path, None, "the spec file is missing")
        cached = self._cache.get(path)
        if cached and cached[0] == mtime:
            return cached[1]
        try:
            loaded = LoadedSpec(path, load_spec(path))
        except SluicewayError as exc:
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            said = lines[0].rstrip(":") + (f": {lines[1].removeprefix('- ')}" if lines[1:] else "")
            loaded = LoadedSpec(path, None, redact(said))
        self._cache[path] = (mtime, loaded)
        return loaded

    def pipelines(self) -> dict[str, LoadedSpec]:
        """Pipeline name → its loaded spec (specs that failed to load are left out)."""
        return {s.pipeline.pipeline: s for s in self.specs() if s.pipeline is not None}

    def datasets(self) -> dict[str, Dataset]:
        """Every source and sink of every spec, by key."""
        found: dict[str, Dataset] = {}
        for spec in self.specs():
            if spec.pipeline is not None:
                self._add_pipeline(found, spec.pipeline, spec.path.parent)
        return found

    def _add_pipeline(self, found: dict[str, Dataset], pipeline: Pipeline, base: Path) -> None:
        name = pipeline.pipeline
        for source in pipeline.sources.values():
            data = self._dataset(found, source, base)
            data.consumers.append(name)
            inventory = getattr(source, "inventory", None)
            _add_owner(data, getattr(inventory, "owner", None))
            if inventory is not None and inventory.freshness:
                data.freshness_target = data.freshness_target or inventory.freshness
            if not data.columns and source.contract is not None:
                data.columns = _contract_columns(source.contract.columns, pipeline.pii)
        primary = pipeline.sources.get(pipeline.primary_source)
        contract = primary.contract.columns if primary and primary.contract else {}
        for sink in pipeline.sinks:
            data = self._dataset(found, sink, base)
            data.producers.append(name)
            _add_owner(data, pipeline.owner)
            if pipeline.sla is not None and pipeline.sla.freshness:
                data.freshness_target = pipeline.sla.freshness
            data.columns = _sink_columns(data.key, contract, pipeline.pii) or data.columns

    def _dataset(self, found: dict[str, Dataset], config: Any, base: Path) -> Dataset:
        key, label = self._locate(config, base)
        return found.setdefault(key, Dataset(key=key, label=label, kind=str(config.type)))

    def _locate(self, config: Any, base: Path) -> tuple[str, str]:
        path = getattr(config, "path", None)
        if isinstance(path, list):
            path = path[0] if path else None
        if isinstance(path, str):
            if "://" in path:
                uri = redact(path.rstrip("/"))
                return uri, uri
            resolved = (base / Path(path).expanduser()).resolve()
            try:
                label = str(resolved.relative_to(self.root))
            except ValueError:
                label = str(resolved)
            return str(resolved), label
        table = getattr(config, "table", None)
        if isinstance(table, str):
            return f"{config.type}:{table}", f"{config.type}:{table}"
        url = getattr(config, "url", None)
        if isinstance(url, str):
            parts = urlsplit(url)
            where = f"{parts.scheme}://{parts.hostname or ''}{parts.path}"
            return where, where
        return f"{config.type}:{id(config)}", f"{config.type} (no location)"


def _add_owner(data: Dataset, owner: str | None) -> None:
    if owner and owner not in data.owners:
        data.owners.append(owner)


def _contract_columns(columns: dict[str, Any], pii: Mapping[str, str]) -> list[Column]:
    return [Column(n, str(c.type), c.description, pii.get(n)) for n, c in columns.items()]


_SCHEMA_CACHE: dict[tuple[str, float], list[tuple[str, str]]] = {}


def _sink_columns(key: str, contract: dict[str, Any], pii: Mapping[str, str]) -> list[Column]:
    """The columns of a local Delta sink from its schema (descriptions from the contract);
    the contract's columns when the table does not exist yet or is remote."""
    schema = _delta_schema(key)
    if not schema:
        return _contract_columns(contract, pii)
    described = {n: c.description for n, c in contract.items()}
    return [Column(n, t, described.get(n), pii.get(n)) for n, t in schema if not n.startswith("_")]


def _delta_schema(key: str) -> list[tuple[str, str]]:
    log = Path(key) / "_delta_log"
    if "://" in key or not log.is_dir():
        return []
    stamp = log.stat().st_mtime
    if (key, stamp) not in _SCHEMA_CACHE:
        try:
            fields = DeltaTable(key).schema().fields
            _SCHEMA_CACHE[(key, stamp)] = [(f.name, _type_name(f.type)) for f in fields]
        except Exception:  # an unreadable table shows the contract's columns instead
            _SCHEMA_CACHE[(key, stamp)] = []
    return _SCHEMA_CACHE[(key, stamp)]


def _type_name(delta_type: Any) -> str:
    return str(getattr(delta_type, "type", None) or type(delta_type).__name__)


def lineage_edges(datasets: dict[str, Dataset]) -> list[tuple[str, str, str]]:
    """(upstream pipeline, downstream pipeline, dataset label) for every dataset one pipeline
    writes and another reads."""
    return [
        (producer, consumer, data.label)
        for data in datasets.values()
        for producer in data.producers
        for consumer in data.consumers
        if producer != consumer
    ]
