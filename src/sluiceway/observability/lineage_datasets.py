"""The OpenLineage datasets of a spec's sources and sinks: where each lives (namespace) and its
name — file paths and object-store URIs, database tables (from `table:` or the tables a
`query:` reads), never credentials."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

OBJECT_STORES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")


@dataclass(frozen=True)
class Dataset:
    """An OpenLineage dataset: where it lives (namespace), its name, and its data-source URI."""

    namespace: str
    name: str
    uri: str


def path_dataset(uri: str) -> Dataset:
    """The dataset of a file or table path (absolute, or a URL such as s3://bucket/key)."""
    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    if "://" not in uri:
        return Dataset("file", uri, f"file://{uri}")
    parts = urlsplit(uri)
    if parts.scheme in OBJECT_STORES:
        return Dataset(f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/"), uri)
    return Dataset(f"{parts.scheme}://{parts.netloc}", parts.path or "/", uri)


def _server(config: Any, default_port: int) -> tuple[str, str]:
    """host:port and database of a database source or sink (never its credentials)."""
    dsn_env = getattr(config, "dsn_env", None)
    dsn = urlsplit(os.environ.get(dsn_env, "")) if dsn_env else None
    host = (dsn.hostname if dsn else None) or getattr(config, "host", None) or "127.0.0.1"
    port = (dsn.port if dsn else None) or getattr(config, "port", None) or default_port
    database = (dsn.path.lstrip("/") if dsn else "") or (
        getattr(config, "dbname", None) or getattr(config, "database", None) or "postgres"
    )
    return f"{host}:{port}", database


def _table_datasets(config: Any, kind: str, port: int, schema: str | None) -> list[Dataset]:
    server, database = _server(config, port)
    namespace = f"{kind}://{server}"
    tables = [config.table] if getattr(config, "table", None) else _query_tables(config)
    datasets = []
    for table in tables:
        parts = table.split(".")
        if schema is not None and len(parts) == 1:
            parts = [schema, *parts]
        name = ".".join([database, *parts]) if len(parts) < 3 else table
        datasets.append(Dataset(namespace, name, f"{namespace}/{database}"))
    return datasets


def _query_tables(config: Any) -> list[str]:
    query = getattr(config, "query", None)
    if not query:
        return []
    import sqlglot
    from sqlglot import exp

    try:
        found = sqlglot.parse_one(query).find_all(exp.Table)
    except sqlglot.errors.SqlglotError:
        return []
    return sorted({".".join(p for p in (t.db, t.name) if p) for t in found})


def datasets_of(config: Any, resolve: Callable[[str], str], fallback: str) -> list[Dataset]:
    """The datasets a source or sink config reads or writes.

    Args:
        config: a source or sink config.
        resolve: makes a spec path absolute (URLs are kept).
        fallback: the dataset name of a plug-in without a path, table or URL.
    """
    kind = getattr(config, "type", "unknown")
    if kind == "postgres":
        return _table_datasets(config, "postgres", 5432, "public")
    if kind == "mysql":
        return _table_datasets(config, "mysql", 3306, None)
    path = getattr(config, "path", None)
    if path:
        paths = [path] if isinstance(path, str) else list(path)
        return [path_dataset(resolve(p)) for p in paths]
    url = getattr(config, "url", None)
    if isinstance(url, str) and "://" in url:
        parts = urlsplit(url)
        namespace = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return [Dataset(namespace, parts.path or "/", namespace)]
    return [Dataset(kind, fallback, f"{kind}://{fallback}")]
