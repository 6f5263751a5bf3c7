"""Checks that look beyond the audited table's values: another table, the column's type, and
how recent the newest row is.

Each still compiles to expressions of the one fused query: another table is read by a
subquery inside it (`(SELECT count(*) FROM …)`, `NOT IN (SELECT …)`), the type by
`typeof(any_value(column))` (bound from the column's type, whatever its rows), the age by
`max(column)`. Results carry counts, type names and ages — never a value of a row.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from sluiceway.checks.base import (
    CheckEnv,
    ColumnValuesCheck,
    NotEvaluable,
    Outcome,
    TableCheck,
    sql_literal,
)
from sluiceway.checks.vocabulary import ColumnCheckConfig, TableCheckConfig
from sluiceway.core import durations, registry
from sluiceway.engines.duckdb import quote_ident, quote_literal

# --- other tables --------------------------------------------------------------------------

FILE_READERS: dict[str, str] = {
    ".parquet": "read_parquet",
    ".csv": "read_csv",
    ".tsv": "read_csv",
    ".json": "read_json",
    ".ndjson": "read_json",
    ".jsonl": "read_json",
}


def other_table(name: str, env: CheckEnv) -> tuple[str, str | None]:
    """(SQL to read FROM, problem) for a table a check names.

    `name` is a pipeline source (`env.tables`) or a local file path DuckDB reads by its
    extension (.parquet, .csv, .tsv, .json, .ndjson, .jsonl, optionally compressed with .gz
    or .zst, globs allowed), relative to `env.base_dir`. When it is neither, the problem says
    why and the SQL names the table as written, so the engine's error names it too.
    """
    if name in env.tables:
        return quote_ident(env.tables[name]), None
    reader = reader_for(name)
    if reader is None:
        known = ", ".join(f"'{t}'" for t in sorted(env.tables)) or "none"
        hint = registry.did_you_mean(name, sorted(env.tables))
        return quote_ident(name), (
            f"unknown table '{name}'.{hint} Name a pipeline source (known: {known}) or a "
            f"local file path ending in {', '.join(FILE_READERS)}"
        )
    path = Path(name) if Path(name).is_absolute() else (env.base_dir or Path.cwd()) / name
    if not glob.glob(str(path)):
        return quote_ident(name), f"file '{path}' not found; check the path of table '{name}'"
    return f"{reader}({quote_literal(str(path))})", None


def reader_for(name: str) -> str | None:
    stem = re.sub(r"\.(gz|zst)$", "", name.lower())
    return next((reader for ext, reader in FILE_READERS.items() if stem.endswith(ext)), None)


class RowCountEqualOtherTableConfig(TableCheckConfig):
    """The table has as many rows as `other_table_name`; no `mostly`."""

    key: ClassVar[str] = "row_count_equal_other_table"
    ge_name: ClassVar[str | None] = "expect_table_row_count_to_equal_other_table"

    other_table_name: str = Field(
        min_length=1, description="A pipeline source's name, or a .parquet/.csv/.json file path."
    )

    no_mostly: ClassVar[str | None] = "the row count is one number, not a fraction of rows"


class ValuesExistInConfig(ColumnCheckConfig):
    """Non-NULL values of `column` occur in `to_column` of `to_table` (referential integrity)."""

    key: ClassVar[str] = "values_exist_in"
    also_known_as: ClassVar[tuple[str, ...]] = ("references",)

    to_table: str = Field(
        min_length=1, description="A pipeline source's name, or a .parquet/.csv/.json file path."
    )
    to_column: str | None = Field(
        None, min_length=1, description="The column of to_table (None: the same name as column)."
    )


class RowCountEqualOtherTableCheck(TableCheck):
    """`row_count_equal_other_table`: the row count equals the other table's."""

    config: RowCountEqualOtherTableConfig

    def cannot_run(self) -> str | None:
        return other_table(self.config.other_table_name, self.env)[1]

    def aggregates(self) -> dict[str, str]:
        source, _ = other_table(self.config.other_table_name, self.env)
        return {"other": f"(SELECT count(*) FROM {source})"}

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        other = int(values["other"])
        message = (
            f"Expected as many rows as table '{self.config.other_table_name}' ({other}); "
            f"found {rows}."
        )
        return Outcome(rows == other, rows, abs(rows - other), None, message)


OTHER = "__sw_other"


class ValuesExistInCheck(ColumnValuesCheck):
    """`values_exist_in`: a non-NULL value absent from the other table's column is unexpected."""

    config: ValuesExistInConfig
    verdict = "were missing there"

    @property
    def to_column(self) -> str:
        """The referenced column."""
        return self.config.to_column or self.config.column

    def cannot_run(self) -> str | None:
        return other_table(self.config.to_table, self.env)[1]

    def predicate(self) -> str:
        return f"to exist in column '{self.to_column}' of table '{self.config.to_table}'"

    def unexpected_sql(self, column: str) -> str:
        source, _ = other_table(self.config.to_table, self.env)
        # Qualified: unqualified, a column the other table lacks binds to the audited table's
        # own (a correlated subquery) and every value "exists". NULLs of the other column are
        # left out: one would make every NOT IN unknown.
        to = f"{OTHER}.{quote_ident(self.to_column)}"
        return f"{column} NOT IN (SELECT {to} FROM {source} AS {OTHER} WHERE {to} IS NOT NULL)"

    def missing_other_column(self, columns_of: Callable[[str], list[str]]) -> str | None:
        source, problem = other_table(self.config.to_table, self.env)
        if problem is not None:
            return None
        columns = columns_of(source)
        if self.to_column.lower() in {c.lower() for c in columns}:
            return None
        table, hint = self.config.to_table, registry.did_you_mean(self.to_column, columns)
        return (
            f"column '{self.to_column}' not found in table '{table}'.{hint} Its columns: "
            f"{', '.join(columns)}. Set to_column to the column of '{table}' that holds the "
            f"values of '{self.config.column}'."
        )


# --- types ---------------------------------------------------------------------------------

FAMILIES: dict[str, tuple[str, str]] = {
    "integer": (
        "an integer type",
        "int tinyint smallint integer bigint hugeint utinyint usmallint uinteger ubigint "
        "uhugeint int1 int2 int4 int8 int16 int32 int64 int128 uint8 uint16 uint32 uint64 "
        "short long signed byte integertype longtype shorttype bytetype varint bignum",
    ),
    "float": (
        "a floating-point type",
        "float double real float4 float8 float16 float32 float64 floattype doubletype "
        "double_precision",
    ),
    "decimal": ("a decimal type", "decimal numeric decimaltype number"),
    "string": (
        "a text type",
        "varchar string str text char bpchar nvarchar utf8 large_string stringtype "
        "string[python] string[pyarrow]",
    ),
    "boolean": ("a boolean type", "bool boolean logical booleantype"),
    "date": ("a date type", "date date32 datetype"),
    "timestamp": (
        "a timestamp without time zone",
        "timestamp datetime datetime64 datetime64[ns] datetime64[us] datetime64[ms] "
        "datetime64[s] timestamp_ns timestamp_ms timestamp_s timestamp_us timestamp_ntz "
        "timestampntztype timestamp_without_time_zone",
    ),
    "timestamptz": (
        "a timestamp with time zone",
        "timestamptz datetimetz timestamptype timestamp_with_time_zone",
    ),
    "time": ("a time of day", "time timetz time_with_time_zone"),
    "interval": ("an interval", "interval timedelta timedelta64[ns] duration"),
    "blob": ("a binary type", "blob bytea binary varbinary bytes binarytype"),
    "uuid": ("a UUID", "uuid"),
    "json": ("JSON", "json"),
    "list": ("a list", "list array arraytype"),
    "struct": ("a struct", "struct structtype"),
    "map": ("a map", "map maptype"),
    "enum": ("an enum", "enum category"),
    "union": ("a union", "union"),
    "bit": ("a bit string", "bit bitstring"),
}
# Spellings are lower case, spaces written as '_' ("timestamp with time zone").
SPELLINGS: dict[str, str] = {
    spelling: family for family, (_, names) in FAMILIES.items() for spelling in names.split()
}


def type_family(type_name: str) -> str | None:
    """The family of a DuckDB, Great Expectations, pandas or Spark type name; None if unknown.

    Widths and parameters do not count: `int64`, `INTEGER` and `BIGINT` are all 'integer',
    `DECIMAL(18,3)` is 'decimal', `INTEGER[]` is 'list'.
    """
    name = "_".join(type_name.strip().lower().split())
    if re.search(r"\[\d*\]$", name):
        return "list"
    if name.startswith("datetime64[") and "," in name:
        return "timestamptz"
    return SPELLINGS.get(re.sub(r"_?\(.*\)$", "", name))


def _known_type(value: str) -> str:
    if type_family(value) is None:
        hint = registry.did_you_mean(value.lower(), sorted(SPELLINGS))
        raise ValueError(
            f"unknown type '{value}'.{hint} Use a DuckDB type name (BIGINT, VARCHAR, DOUBLE, "
            "DECIMAL, BOOLEAN, DATE, TIMESTAMP, ...) or a pandas/Spark spelling "
            "(int64, str, float64, bool, datetime64[ns], StringType, ...)"
        )
    return value


class OfTypeConfig(ColumnCheckConfig):
    """`column` has a type of the family of `type_` (widths are not compared); no `mostly`."""

    key: ClassVar[str] = "of_type"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_of_type"

    type_: str = Field(
        min_length=1, description="A type name, e.g. 'int64', 'INTEGER', 'str', 'timestamp'."
    )

    @field_validator("type_")
    @classmethod
    def _known(cls, value: str) -> str:
        return _known_type(value)

    no_mostly: ClassVar[str | None] = "a column has one type"


class InTypeListConfig(ColumnCheckConfig):
    """`column` has a type of the family of one of `type_list`; no `mostly`."""

    key: ClassVar[str] = "in_type_list"
    ge_name: ClassVar[str | None] = "expect_column_values_to_be_in_type_list"

    type_list: list[str] = Field(
        min_length=1, description="Type names, e.g. ['int64', 'float64', 'DECIMAL']."
    )

    @field_validator("type_list")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        return [_known_type(v) for v in value]

    no_mostly: ClassVar[str | None] = "a column has one type"


class TypeCheck(TableCheck):
    """`of_type` / `in_type_list`: the column's engine type falls in an accepted family."""

    config: OfTypeConfig | InTypeListConfig

    def accepted(self) -> list[str]:
        """The configured type names."""
        c = self.config
        return [c.type_] if isinstance(c, OfTypeConfig) else list(c.type_list)

    def aggregates(self) -> dict[str, str]:
        return {"type": f"typeof(any_value({quote_ident(self.config.column)}))"}

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        actual = str(values["type"])
        family = type_family(actual)
        wanted = {type_family(name) for name in self.accepted()}
        names = " or ".join(
            f"{name} ({FAMILIES[str(type_family(name))][0]})" for name in self.accepted()
        )
        what = FAMILIES[family][0] if family in FAMILIES else "a type of no known family"
        message = f"Expected column '{self.config.column}' to be {names}; it is {actual} ({what})."
        success = family in wanted
        return Outcome(success, None, 0 if success else 1, None, message)


# --- freshness -----------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """`max_age` as a duration (see `core.durations`)."""
    return durations.parse_duration(text, what="max_age")


class FreshnessConfig(ColumnCheckConfig):
    """The newest value of `column` (a DATE or TIMESTAMP) is at most `max_age` old; no `mostly`.

    Age is measured at the run's logical time; a timestamp without zone is UTC, a date is
    midnight UTC at its start.
    """

    key: ClassVar[str] = "freshness"

    max_age: str = Field(description="Oldest allowed age: '90s', '30m', '2h', '1d12h', 'PT2H'.")

    @field_validator("max_age")
    @classmethod
    def _a_duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    no_mostly: ClassVar[str | None] = "the newest value is one value, not a fraction of rows"


TEMPORAL = frozenset({"date", "timestamp", "timestamptz"})


class FreshnessCheck(TableCheck):
    """`freshness`: as_of − max(column) ≤ max_age; `observed_value` is the age in seconds."""

    config: FreshnessConfig

    def __init__(self, config: FreshnessConfig, env: CheckEnv | None = None) -> None:
        super().__init__(config, env)
        as_of = self.env.as_of()
        self.as_of = as_of if as_of.tzinfo else as_of.replace(tzinfo=UTC)

    def aggregates(self) -> dict[str, str]:
        column = quote_ident(self.config.column)
        # Through text, a TIMESTAMP (no zone) reads as UTC (the engine's zone) and a DATE as
        # its midnight; any other type gives NULL here and is refused by `outcome`.
        newest = f"try_cast(CAST(max({column}) AS VARCHAR) AS TIMESTAMPTZ)"
        now = f"CAST({sql_literal(self.as_of.isoformat())} AS TIMESTAMPTZ)"
        return {
            "type": f"typeof(any_value({column}))",
            "age": f"epoch({now}) - epoch({newest})",
        }

    def outcome(self, values: dict[str, Any], rows: int) -> Outcome:
        column, max_age = self.config.column, parse_duration(self.config.max_age)
        if type_family(str(values["type"])) not in TEMPORAL:
            raise NotEvaluable(
                f"column '{column}' is {values['type']}; freshness needs a DATE or TIMESTAMP "
                "column (cast it in a step)"
            )
        expected = (
            f"Expected the newest value of column '{column}' to be at most "
            f"{self.config.max_age} old at {self.as_of.isoformat()}"
        )
        if values["age"] is None:
            return Outcome(False, None, None, None, f"{expected}; there was no value to judge.")
        age = float(values["age"])
        success = age <= max_age.total_seconds()
        return Outcome(success, age, None, None, f"{expected}; it was {_age_text(age)}.")


def _age_text(seconds: float) -> str:
    if seconds < 0:
        return f"{_span(-seconds)} in the future"
    return f"{_span(seconds)} old"


def _span(seconds: float) -> str:
    left = round(seconds)
    parts: list[str] = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size or (unit == "s" and not parts):
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)


IMPLEMENTATIONS: dict[type[TableCheckConfig], type[TableCheck]] = {
    RowCountEqualOtherTableConfig: RowCountEqualOtherTableCheck,
    ValuesExistInConfig: ValuesExistInCheck,
    OfTypeConfig: TypeCheck,
    InTypeListConfig: TypeCheck,
    FreshnessConfig: FreshnessCheck,
}
CHECK_CONFIGS: tuple[type[TableCheckConfig], ...] = tuple(IMPLEMENTATIONS)
