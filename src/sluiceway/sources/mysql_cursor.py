"""The high-water mark of an incremental MySQL read: what the position holds, the lower
bound of the next read (minus `lag`), and the one pass over the loaded rows that finds the
new mark, a content hash for the fingerprint and the duplicate keys."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from pymysql.converters import escape_string

from sluiceway.core.context import ROW_NUMBER, RunContext
from sluiceway.core.durations import parse_duration
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident
from sluiceway.errors import ConfigError, SourceError


class CursorConfig(Protocol):
    """The settings of a source that reads by cursor."""

    @property
    def mode(self) -> str: ...
    @property
    def cursor(self) -> str | None: ...
    @property
    def primary_key(self) -> list[str]: ...
    @property
    def lag(self) -> str | float | None: ...


@dataclass(frozen=True)
class Mark:
    """A high-water mark: the cursor column, its kind and the value as JSON-able text."""

    cursor: str
    kind: str
    value: str

    def to_position(self) -> dict[str, Any]:
        """The position committed with the data."""
        return {"cursor": self.cursor, "cursor_type": self.kind, "high_water_mark": self.value}

    def parsed(self) -> Any:
        """The value as a Python object of its kind."""
        return _PARSE[self.kind](self.value)


@dataclass(frozen=True)
class Summary:
    """What one pass over the loaded rows found."""

    high_water: Any
    content_hash: int
    duplicates: int


def committed_mark(config: CursorConfig, position: dict[str, Any] | None) -> Mark | None:
    """The mark to resume from: None in full mode or before the first commit.

    Raises:
        ConfigError: the committed mark belongs to another cursor column.
    """
    if config.mode != "incremental" or not position or "high_water_mark" not in position:
        return None
    mark = Mark(
        str(position["cursor"]), str(position["cursor_type"]), str(position["high_water_mark"])
    )
    if mark.cursor != config.cursor:
        raise ConfigError(
            f"the committed position of this source tracks cursor '{mark.cursor}', the spec "
            f"says '{config.cursor}'; restore the cursor, or write to a new table to start over"
        )
    return mark


def lower_bound(mark: Mark, lag: str | float | None) -> str:
    """The MySQL literal the next read starts from: the mark minus `lag`, inclusive.

    Raises:
        ConfigError: `lag` does not suit the cursor (a duration for a number, or the reverse).
    """
    value = mark.parsed()
    if mark.kind in ("timestamp", "date"):
        if isinstance(lag, int | float):
            raise ConfigError(
                f"lag {lag} is a number but cursor '{mark.cursor}' holds {mark.kind}s; "
                "write a duration such as '5m'"
            )
        if lag is None:
            return _quoted(value.isoformat(sep=" ") if mark.kind == "timestamp" else str(value))
        start = value if mark.kind == "timestamp" else datetime.combine(value, datetime.min.time())
        return _quoted(
            (start - parse_duration(lag, what="lag", allow_zero=True)).isoformat(sep=" ")
        )
    if mark.kind == "string":
        if lag is not None:
            raise ConfigError(f"cursor '{mark.cursor}' holds text: lag cannot apply; remove it")
        return _quoted(value)
    if isinstance(lag, str):
        raise ConfigError(
            f"lag '{lag}' is a duration but cursor '{mark.cursor}' is numeric; write a number"
        )
    return str(Decimal(str(value)) - Decimal(str(lag or 0)))


def newer_mark(config: CursorConfig, before: Mark | None, high_water: Any) -> Mark | None:
    """The mark after a read that saw `high_water` (None: nothing new, keep `before`)."""
    if config.cursor is None or high_water is None:
        return before
    kind, value = _kind_of(config.cursor, high_water)
    mark = Mark(config.cursor, kind, value)
    if before is not None and before.kind == kind and before.parsed() > mark.parsed():
        return before
    return mark


def summarize(
    engine: DuckDBEngine, table: str, config: CursorConfig, columns: list[Any]
) -> Summary:
    """One pass: the highest cursor, a hash of every row's values, and how many rows repeat
    a primary key."""
    names = ", ".join(quote_ident(c.name) for c in columns)
    high = f"max({quote_ident(config.cursor)})" if config.cursor else "NULL"
    keys = ", ".join(quote_ident(k) for k in config.primary_key)
    dupes = f"count(*) - count(DISTINCT ({keys}))" if keys else "0"
    row = engine.fetch_one(
        f"SELECT {high}, coalesce(sum(hash({names})::HUGEINT), 0), {dupes} "
        f"FROM {quote_ident(table)}",
        purpose="summarize the rows read",
    )
    return Summary(row[0], int(row[1]), int(row[2]))


def keep_latest_per_key(ctx: RunContext, table: str, config: CursorConfig) -> str:
    """A new table with one row per primary key of `table` (the highest cursor, then the
    last read); `table` is dropped."""
    keys = ", ".join(quote_ident(k) for k in config.primary_key)
    order = f"{quote_ident(config.cursor)} DESC NULLS LAST, " if config.cursor else ""
    kept = ctx.engine.create_table(
        ctx.engine.new_name("dedup_source"),
        f"SELECT * FROM {quote_ident(table)} QUALIFY row_number() OVER "
        f"(PARTITION BY {keys} ORDER BY {order}{ROW_NUMBER} DESC) = 1 ORDER BY {ROW_NUMBER}",
        purpose="keep one row per primary key",
    )
    ctx.engine.drop(table)
    return kept


def _quoted(text: str) -> str:
    return "'" + escape_string(text) + "'"


def _kind_of(cursor: str, value: Any) -> tuple[str, str]:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return "timestamp", value.isoformat()
    for kind, types in _KINDS:
        if isinstance(value, types):
            return kind, str(value) if kind != "double" else repr(value)
    raise SourceError(
        f"cursor '{cursor}' holds {type(value).__name__} values, which cannot order reads; "
        "use a date/time, numeric or text column"
    )


def _number(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ConfigError(f"committed high-water mark '{text}' is not a number") from None


_KINDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("date", date),
    ("integer", int),
    ("decimal", Decimal),
    ("double", float),
    ("string", str),
)
_PARSE: dict[str, Callable[[str], Any]] = {
    "timestamp": datetime.fromisoformat,
    "date": date.fromisoformat,
    "integer": _number,
    "decimal": _number,
    "double": _number,
    "string": str,
}

__all__ = ["Mark", "Summary", "committed_mark", "keep_latest_per_key", "lower_bound", "newer_mark"]
