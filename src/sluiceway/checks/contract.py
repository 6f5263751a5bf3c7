"""The data contract as SQL: cast every column, compute every failed rule per row, split.

One scan writes the valid rows with their contract types; one more writes the rejected
rows with the list of every rule they broke (rule, column, reason), their masked payload
and their raw payload. Reasons quote the offending value only for columns that are not PII.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from sluiceway.core.context import META_COLUMNS, ROW_ERRORS, ROW_FILE, ROW_NUMBER, Shape
from sluiceway.core.spec import ColumnContract, Contract
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.masking.ip import IPV6_PATTERN

_TYPES: dict[str, str] = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "bigint": "BIGINT",
    "double": "DOUBLE",
    "float": "DOUBLE",
    "boolean": "BOOLEAN",
    "date": "DATE",
    "timestamp": "TIMESTAMPTZ",
    "timestamp_ntz": "TIMESTAMP",
    "json": "VARCHAR",
}
_FORMATS: dict[str, str] = {
    "email": (
        r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
        r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
    ),
    "ipv4": r"(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])",
    "ipv6": IPV6_PATTERN,
    "iso_timestamp": r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}(?::?\d{2})?)?",
    "iso_date": r"\d{4}-\d{2}-\d{2}",
    "uuid": r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
    "url": r"https?://[^\s/$.?#].[^\s]*",
}


@dataclass(frozen=True)
class Rule:
    """One rule of one column: the SQL condition that breaks it, and the reason."""

    rule: str
    column: str
    condition: str
    reason: str
    is_hard: bool = False


@dataclass(frozen=True)
class ContractResult:
    """The valid and rejected tables a contract produced, and the counts."""

    valid: str
    rejected: str
    rows_valid: int
    rows_rejected: int
    rows_warned: int
    columns: list[str]
    backing_tables: tuple[str, ...] = ()


def cast_sql(column: str, spec: ColumnContract) -> str:
    """The SQL that casts a source column to its contract type (NULL when it cannot)."""
    src = quote_ident(column)
    if spec.strftime and spec.type in ("timestamp", "timestamp_ntz", "date"):
        parsed = f"try_strptime({src}::VARCHAR, {quote_literal(spec.strftime)})"
        return (
            f"({parsed})::DATE"
            if spec.type == "date"
            else f"timezone('UTC', {parsed})"
            if spec.type == "timestamp"
            else parsed
        )
    if spec.type == "decimal":
        return f"TRY_CAST({src} AS DECIMAL({spec.precision},{spec.scale}))"
    if spec.type in ("integer", "bigint"):
        # DuckDB rounds '1.5' to 2 when casting to BIGINT; a fraction is not an integer.
        as_double, as_bigint = f"TRY_CAST({src} AS DOUBLE)", f"TRY_CAST({src} AS BIGINT)"
        return f"CASE WHEN {as_double} <> trunc({as_double}) THEN NULL ELSE {as_bigint} END"
    if spec.type == "json":
        return f"CASE WHEN json_valid({src}::VARCHAR) THEN {src}::VARCHAR END"
    return f"TRY_CAST({src} AS {_TYPES[spec.type]})"


def column_rules(
    column: str, spec: ColumnContract, *, present: bool, is_pii: bool, typed: str | None = None
) -> list[Rule]:
    """Every rule of one column as SQL conditions, in a stable order.

    `typed` names a column that already holds the cast value; without it the rules cast.
    """
    if not present:
        if spec.required or not spec.nullable:
            reason = quote_literal(f"column '{column}' is missing from the source")
            return [Rule("missing_column", column, "true", reason, True)]
        return []
    src, cast = quote_ident(column), typed or cast_sql(column, spec)
    shown = _value_sql(src, is_pii)
    rules = [builder(column, spec, src, cast, shown) for builder in _RULE_BUILDERS]
    return [r for group in rules for r in group]


def _value_sql(src: str, is_pii: bool) -> str:
    return "'value'" if is_pii else f"'value ''' || left({src}::VARCHAR, 60) || ''''"


def _nullable(column: str, spec: ColumnContract, src: str, cast: str, shown: str) -> list[Rule]:
    if spec.nullable:
        return []
    return [
        Rule(
            "not_null", column, f"{src} IS NULL", "'is null but the contract says nullable: false'"
        )
    ]


def _type(column: str, spec: ColumnContract, src: str, cast: str, shown: str) -> list[Rule]:
    if spec.type == "string":
        return []
    wanted = (
        ("an " if spec.type[0] in "aeiou" else "a ")
        + spec.type
        + (f" in format {spec.strftime}" if spec.strftime else "")
    )
    reason = f"{shown} || {quote_literal(' is not ' + wanted)}"
    return [Rule("type", column, f"{src} IS NOT NULL AND ({cast}) IS NULL", reason, True)]


def _bounds(column: str, spec: ColumnContract, src: str, cast: str, shown: str) -> list[Rule]:
    out = []
    if spec.min is not None:
        out.append(
            Rule(
                "min",
                column,
                f"({cast}) < {spec.min!r}",
                f"{shown} || ' is below the minimum {spec.min:g}'",
            )
        )
    if spec.max is not None:
        out.append(
            Rule(
                "max",
                column,
                f"({cast}) > {spec.max!r}",
                f"{shown} || ' is above the maximum {spec.max:g}'",
            )
        )
    return out


def _values(column: str, spec: ColumnContract, src: str, cast: str, shown: str) -> list[Rule]:
    if not spec.values:
        return []
    # A string column compares as text: '01' is not 1, and 'oops' must not fail a cast.
    as_text = spec.type in ("string", "json")
    listed = ", ".join(quote_literal(_text(v)) if as_text else _literal(v) for v in spec.values)
    allowed = ", ".join(str(v) for v in spec.values)[:200].replace("'", "''")
    return [
        Rule(
            "values",
            column,
            f"({cast}) NOT IN ({listed})",
            f"{shown} || ' is not one of: {allowed}'",
        )
    ]


def _pattern(column: str, spec: ColumnContract, src: str, cast: str, shown: str) -> list[Rule]:
    out = []
    if spec.regex:
        out.append(
            Rule(
                "regex",
                column,
                f"NOT regexp_full_match({src}::VARCHAR, {quote_literal(spec.regex)})",
                f"{shown} || ' does not match the pattern'",
            )
        )
    if spec.format:
        out.append(_format_rule(column, spec.format, src, shown))
    return out


def _format_rule(column: str, fmt: str, src: str, shown: str) -> Rule:
    if fmt == "ip":
        cond = (
            f"NOT (regexp_full_match({src}::VARCHAR, {quote_literal(_FORMATS['ipv4'])}) OR "
            f"regexp_full_match({src}::VARCHAR, {quote_literal(_FORMATS['ipv6'])}))"
        )
    else:
        cond = f"NOT regexp_full_match({src}::VARCHAR, {quote_literal(_FORMATS[fmt])})"
        if fmt in ("iso_timestamp", "iso_date"):
            target = "TIMESTAMPTZ" if fmt == "iso_timestamp" else "DATE"
            # NULL is judged by `nullable`, not by the format.
            cond = (
                f"({cond} OR ({src} IS NOT NULL AND TRY_CAST({src}::VARCHAR AS {target}) IS NULL))"
            )
    return Rule("format", column, cond, f"{shown} || ' is not a valid {fmt}'")


def _lengths(column: str, spec: ColumnContract, src: str, cast: str, shown: str) -> list[Rule]:
    out = []
    if spec.min_length is not None:
        out.append(
            Rule(
                "min_length",
                column,
                f"length({src}::VARCHAR) < {spec.min_length}",
                f"'is shorter than {spec.min_length} characters'",
            )
        )
    if spec.max_length is not None:
        out.append(
            Rule(
                "max_length",
                column,
                f"length({src}::VARCHAR) > {spec.max_length}",
                f"'is longer than {spec.max_length} characters'",
            )
        )
    return out


_RULE_BUILDERS: list[Callable[[str, ColumnContract, str, str, str], list[Rule]]] = [
    _nullable,
    _type,
    _bounds,
    _values,
    _pattern,
    _lengths,
]


def is_pii(column: str, pii: Mapping[str, str]) -> bool:
    """True when `column` is declared PII; DuckDB names are case-insensitive, so is this."""
    return column.casefold() in {name.casefold() for name in pii}


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return quote_literal(str(value))


def _text(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _rule_struct(rule: Rule) -> str:
    return (
        f"CASE WHEN coalesce({rule.condition}, false) THEN {{'rule': {quote_literal(rule.rule)}, "
        f"'column': {quote_literal(rule.column)}, 'reason': {rule.reason}}} END"
    )


CHANGE_OP = "__sw_op"
"""The operation column of change-capture rows (r, i, u, d: see `sinks.delta.CHANGE_OP`)."""
FLAG_COLUMNS = ("__sw_bad", "__sw_warn", "__sw_errors", "__sw_payload", "__sw_raw")


def apply_contract(
    engine: DuckDBEngine,
    table: str,
    contract: Contract,
    *,
    pii: Mapping[str, str],
    masked_payload: Callable[[list[str]], str],
) -> ContractResult:
    """Split `table` into valid rows (typed) and rejected rows (with every failed rule).

    `table` has the source's columns plus __sw_file and __sw_row. Equivalent to reading
    the source with `flagging_query(...)` as its shape, then `split_flagged`.

    Returns:
        The valid view (and the table behind it), the rejected table and the counts. The
        rejected table has __sw_file, __sw_row, __sw_errors (list of {rule, column, reason}),
        payload and raw (JSON text).
    """
    shape = flagging_query(contract, pii=pii, masked_payload=masked_payload)
    columns = [c for c, _ in engine.columns(table)]
    flagged = engine.create_table(
        engine.new_name("flagged"), shape(quote_ident(table), columns), purpose="apply the contract"
    )
    result = split_flagged(engine, flagged)
    return replace(result, backing_tables=(flagged,))


def flagging_query(
    contract: Contract, *, pii: Mapping[str, str], masked_payload: Callable[[list[str]], str]
) -> Shape:
    """The contract as a query shape: (relation SQL, its columns) → the SELECT that flags it.

    One pass casts every column once and flags the rows that break a rule; for flagged rows
    only (CASE is evaluated lazily) it adds the list of failed rules, the masked payload and
    the raw record. A source can run it in the very statement that reads a file, so the raw
    text rows are never stored. __sw_file and __sw_row pass through when the relation has them.
    """

    def shape(relation: str, columns: list[str]) -> str:
        meta = [c for c in META_COLUMNS if c in columns]
        present = [c for c in columns if c not in META_COLUMNS]
        renames = case_renames(contract, present)
        if renames:
            pairs = ", ".join(f"{quote_ident(a)} AS {quote_ident(b)}" for a, b in renames.items())
            relation = f"(SELECT * RENAME ({pairs}) FROM {relation})"
            present = [renames.get(c, c) for c in present]
        return _flag_sql(relation, contract, present, meta, pii, masked_payload)

    return shape


def case_renames(contract: Contract, present: list[str]) -> dict[str, str]:
    """Input columns named like a contract column but for case (`Email` for `email`): the
    contract's name, as SQL would resolve it. Without this the contract's column would read
    as missing (NULL) and the input's would pass beside it unchecked and unmasked. A column
    matched exactly, or whose case-insensitive name is ambiguous, is left alone."""
    exact = set(present)
    by_fold: dict[str, list[str]] = {}
    for column in present:
        by_fold.setdefault(column.casefold(), []).append(column)
    renames: dict[str, str] = {}
    for name in contract.columns:
        candidates = by_fold.get(name.casefold(), [])
        if name not in exact and len(candidates) == 1:
            renames[candidates[0]] = name
    return renames


def split_flagged(engine: DuckDBEngine, flagged: str) -> ContractResult:
    """Valid rows (a view) and rejected rows (a table) of a flagged relation, with counts."""
    valid = engine.create_view(
        engine.new_name("valid"),
        f"SELECT * EXCLUDE ({', '.join(FLAG_COLUMNS)}) FROM {quote_ident(flagged)} WHERE NOT __sw_bad",
    )
    rejected = engine.create_table(
        engine.new_name("rejected"),
        f"SELECT {ROW_FILE}, {ROW_NUMBER}, __sw_errors AS {ROW_ERRORS}, __sw_payload AS payload, "
        f"__sw_raw AS raw FROM {quote_ident(flagged)} WHERE __sw_bad",
        purpose="collect contract violations",
    )
    rows_valid, warned = engine.fetch_one(
        f"SELECT count(*) FILTER (WHERE NOT __sw_bad), "
        f"count(*) FILTER (WHERE __sw_warn AND NOT __sw_bad) FROM {quote_ident(flagged)}",
        purpose="count contract results",
    )
    names = [c for c, _ in engine.columns(valid) if c not in META_COLUMNS]
    return ContractResult(
        valid, rejected, int(rows_valid), engine.count(rejected), int(warned), names
    )


def _conditions(rules: list[Rule], contract: Contract) -> tuple[str, str]:
    """(hard, soft): SQL of the rules that reject a row, and of those that only warn."""
    rejecting = [r for r in rules if r.is_hard or contract.on_violation != "warn"]
    warning = [r for r in rules if not r.is_hard and contract.on_violation == "warn"]
    hard = " OR ".join(f"coalesce({r.condition}, false)" for r in rejecting) or "false"
    soft = " OR ".join(f"coalesce({r.condition}, false)" for r in warning) or "false"
    return hard, soft


def _typed_name(column: str) -> str:
    return quote_ident(f"__sw_t_{column}")


def _flag_sql(
    relation: str,
    contract: Contract,
    present: list[str],
    meta: list[str],
    pii: Mapping[str, str],
    masked_payload: Callable[[list[str]], str],
) -> str:
    typed = [_typed_name(c) for c in contract.columns if c in present]
    casts = [
        f"{cast_sql(c, spec)} AS {_typed_name(c)}"
        for c, spec in contract.columns.items()
        if c in present
    ]
    raw_cols = [quote_ident(c) for c in present]
    rules, output = _plan(contract, present, pii, typed=True)
    hard, soft = _conditions(rules, contract)
    if CHANGE_OP in present:
        # A change-capture delete carries the key, and at most the old row: its values are
        # not the row's to check, and rejecting it would leave the deleted row in the table.
        hard = f"({hard}) AND {CHANGE_OP} IS DISTINCT FROM 'd'"
        soft = f"({soft}) AND {CHANGE_OP} IS DISTINCT FROM 'd'"
    errors = (
        "list_filter([" + ", ".join(_rule_struct(r) for r in rules) + "], lambda e: e IS NOT NULL)"
        if rules
        else "[]"
    )
    raw = f"to_json(struct_pack({', '.join(raw_cols)}))::VARCHAR" if present else "'{}'"
    cast_level = f"SELECT {', '.join([*raw_cols, *casts, *meta]) or '1'} FROM {relation}"
    flag_level = (
        f"SELECT {', '.join([*raw_cols, *typed, *meta, f'({hard}) AS __sw_bad', f'({soft}) AS __sw_warn'])} "
        f"FROM ({cast_level})"
    )
    return (
        f"SELECT {', '.join([*output, *meta])}{', ' if output or meta else ''}__sw_bad, __sw_warn, "
        f"CASE WHEN __sw_bad THEN {errors} END AS __sw_errors, "
        f"CASE WHEN __sw_bad THEN {masked_payload(present)} END AS __sw_payload, "
        f"CASE WHEN __sw_bad THEN {raw} END AS __sw_raw FROM ({flag_level})"
    )


def _plan(
    contract: Contract, present: list[str], pii: Mapping[str, str], *, typed: bool
) -> tuple[list[Rule], list[str]]:
    rules: list[Rule] = []
    output: list[str] = []
    for column, spec in contract.columns.items():
        is_present = column in present
        ref = _typed_name(column) if typed and is_present else None
        rules.extend(
            column_rules(column, spec, present=is_present, is_pii=is_pii(column, pii), typed=ref)
        )
        value = (
            (ref or cast_sql(column, spec))
            if is_present
            else f"NULL::{_TYPES.get(spec.type, 'VARCHAR')}"
        )
        output.append(f"{value} AS {quote_ident(column)}")
    for column in (c for c in present if c not in contract.columns):
        if contract.evolution == "evolve":
            output.append(quote_ident(column))
        elif contract.evolution == "freeze":
            reason = quote_literal(f"column '{column}' is not in the contract (evolution: freeze)")
            rules.append(
                Rule("unknown_column", column, f"{quote_ident(column)} IS NOT NULL", reason, True)
            )
    return rules, output
