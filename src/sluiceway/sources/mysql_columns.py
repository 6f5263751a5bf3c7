"""How each MySQL / MariaDB column travels: what the server sends, and the DuckDB type it
lands as.

connectorx turns MySQL rows into Arrow, and maps most types faithfully. Where it does not,
the column is fetched differently and cast back in DuckDB, on the chunk as it is appended:

- DECIMAL(p,s): connectorx forces decimal128(38,10) and fails on a scale above 10, so the
  value is fetched as text and cast to DECIMAL(p,s) (p > 38 stays text: DuckDB stops at 38);
- TINYINT(1) is the way MySQL declares a boolean: it lands as BOOLEAN, and a value other
  than 0 and 1 stops the read (it is a number: select it as one in a query);
- TIMESTAMP is an instant: the session runs in UTC, so it lands as TIMESTAMPTZ; DATETIME is
  a wall-clock time without a zone and lands as TIMESTAMP;
- unsigned integers widen to the next signed type (BIGINT UNSIGNED to DECIMAL(20,0)): every
  value fits, and Delta Lake has no unsigned types;
- TIME is a duration in MySQL (up to ±838:59:59), not a time of day: it lands as text.

JSON (in MariaDB an alias of LONGTEXT) lands as text, BLOB/BINARY as BLOB, YEAR as SMALLINT.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pymysql.constants import FIELD_TYPE, FLAG

from sluiceway.engines.duckdb import quote_ident, quote_literal

_DUCKDB_MAX_DECIMAL = 38
UNFIT_VALUE = "sluice-unfit-value: "
"""Marks the message of a value a column's type cannot hold (raised in DuckDB while the
rows load), so the source can tell it from other load errors."""
_WIDER_SIGNED = {
    FIELD_TYPE.TINY: "SMALLINT",
    FIELD_TYPE.SHORT: "INTEGER",
    FIELD_TYPE.INT24: "INTEGER",
    FIELD_TYPE.LONG: "BIGINT",
    FIELD_TYPE.LONGLONG: "DECIMAL(20,0)",
}


@dataclass(frozen=True)
class Column:
    """One result column: `fetch` is the MySQL expression sent to the server (over the
    derived table `sw_q`), `load` the DuckDB expression over the fetched Arrow column."""

    name: str
    fetch: str
    load: str


def plan_columns(fields: list[Any]) -> list[Column]:
    """The transfer plan of every column of a result, from PyMySQL's field descriptors."""
    return [_RULES.get(field.type_code, _plain)(field) for field in fields]


def quote_mysql(name: str) -> str:
    """Quote an identifier for MySQL."""
    return "`" + name.replace("`", "``") + "`"


def _fetched(field: Any) -> str:
    return f"sw_q.{quote_mysql(field.name)}"


def _plain(field: Any) -> Column:
    return Column(field.name, _fetched(field), quote_ident(field.name))


def _cast(field: Any, duck_type: str, *, as_text: bool = False) -> Column:
    fetch = _fetched(field)
    if as_text:
        fetch = f"CAST({fetch} AS CHAR) AS {quote_mysql(field.name)}"
    return Column(field.name, fetch, f"CAST({quote_ident(field.name)} AS {duck_type})")


def _decimal(field: Any) -> Column:
    scale = int(field.scale)
    is_unsigned = bool(field.flags & FLAG.UNSIGNED)
    precision = int(field.length) - (0 if is_unsigned else 1) - (1 if scale else 0)
    if precision > _DUCKDB_MAX_DECIMAL:
        return _cast(field, "VARCHAR", as_text=True)
    return _cast(field, f"DECIMAL({max(precision, 1)},{scale})", as_text=True)


def _integer(field: Any) -> Column:
    if field.flags & FLAG.UNSIGNED:
        return _cast(field, _WIDER_SIGNED[field.type_code])
    return _plain(field)


def _tiny(field: Any) -> Column:
    if int(field.length) != 1:
        return _integer(field)
    # MySQL stores any -128..127 in a TINYINT(1): a value other than 0 and 1 is not a
    # boolean, and casting would turn a status code 2 into true for good.
    name = quote_ident(field.name)
    column = quote_mysql(field.name)
    refusal = quote_literal(
        f"{UNFIT_VALUE}column {field.name} is TINYINT(1), which lands as BOOLEAN, but holds a "
        f"value other than 0 and 1; select it as a number in a query (CAST({column} AS "
        f"SIGNED) AS {column})"
    )
    load = (
        f"CASE WHEN {name} IS NULL OR {name} IN (0, 1) THEN CAST({name} AS BOOLEAN) "
        f"ELSE error({refusal}) END"
    )
    return Column(field.name, _fetched(field), load)


def _timestamp(field: Any) -> Column:
    return _cast(field, "TIMESTAMPTZ")


def _duration(field: Any) -> Column:
    return _cast(field, "VARCHAR", as_text=True)


_RULES: dict[int, Callable[[Any], Column]] = {
    FIELD_TYPE.DECIMAL: _decimal,
    FIELD_TYPE.NEWDECIMAL: _decimal,
    FIELD_TYPE.TINY: _tiny,
    FIELD_TYPE.SHORT: _integer,
    FIELD_TYPE.INT24: _integer,
    FIELD_TYPE.LONG: _integer,
    FIELD_TYPE.LONGLONG: _integer,
    FIELD_TYPE.TIMESTAMP: _timestamp,
    FIELD_TYPE.TIME: _duration,
}
