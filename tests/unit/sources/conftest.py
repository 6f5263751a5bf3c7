from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sluiceway.core.context import RunContext, SourceRead
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident
from sluiceway.sources.files import FilesSource, FilesSourceConfig

ReadFiles = Callable[..., SourceRead]
FetchRows = Callable[[str], list[dict[str, Any]]]


@pytest.fixture
def read_files(ctx: RunContext) -> ReadFiles:
    """Read `path` with a fresh FilesSource: read_files(path, position=..., **config)."""

    def read(
        path: str | list[str], *, position: dict[str, Any] | None = None, **config: Any
    ) -> SourceRead:
        source = FilesSource(FilesSourceConfig(path=path, **config))
        return source.read(ctx, "orders", position=position)

    return read


@pytest.fixture
def fetch_rows(engine: DuckDBEngine) -> FetchRows:
    """Every row of a table as a dict, in file then row order."""

    def fetch(table: str) -> list[dict[str, Any]]:
        cursor = engine.execute(f"SELECT * FROM {quote_ident(table)} ORDER BY __sw_file, __sw_row")
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    return fetch
