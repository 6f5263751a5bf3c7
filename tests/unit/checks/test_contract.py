"""The data contract: every rule rejects exactly the rows that break it, with the reason."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pytest

from sluiceway.checks.contract import ContractResult, apply_contract
from sluiceway.core.spec import ColumnContract, Contract
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident

Errors = list[tuple[str, str, str]]


def masked_payload(columns: list[str]) -> str:
    return "to_json(struct_pack(" + ", ".join(f'"{c}" := "{c}"' for c in columns) + "))::VARCHAR"


@dataclass
class Outcome:
    """What a contract did to a source table: kept rows, rejected rows by source row, counts."""

    result: ContractResult
    valid: list[dict[str, Any]]
    rejected: dict[int, dict[str, Any]]

    @property
    def errors(self) -> dict[int, Errors]:
        return {
            row: [(e["rule"], e["column"], e["reason"]) for e in rejected["__sw_errors"]]
            for row, rejected in self.rejected.items()
        }

    def kept(self, column: str) -> list[Any]:
        return [row[column] for row in self.valid]


def source(engine: DuckDBEngine, columns: dict[str, list[str | None]]) -> str:
    """A text source table like the files source makes: the columns plus __sw_file, __sw_row."""
    size = len(next(iter(columns.values())))
    data = {name: pa.array(values, pa.string()) for name, values in columns.items()}
    data["__sw_file"] = pa.array(["in.csv"] * size)
    data["__sw_row"] = pa.array(range(1, size + 1), pa.int64())
    return engine.register_arrow(engine.new_name("source"), pa.table(data))


def fetch(engine: DuckDBEngine, table: str) -> list[dict[str, Any]]:
    cursor = engine.execute(f"SELECT * FROM {quote_ident(table)} ORDER BY __sw_row")
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def run(
    engine: DuckDBEngine,
    columns: dict[str, list[str | None]],
    contract: Contract,
    pii: dict[str, str] | None = None,
) -> Outcome:
    result = apply_contract(
        engine, source(engine, columns), contract, pii=pii or {}, masked_payload=masked_payload
    )
    rejected = {row["__sw_row"]: row for row in fetch(engine, result.rejected)}
    return Outcome(result, fetch(engine, result.valid), rejected)


def one_column(spec: ColumnContract) -> Contract:
    return Contract(columns={"v": spec})


# Each rule, as data: the column's contract, its values (rows 1..n), and the errors by row.
RULE_CASES: list[tuple[str, ColumnContract, list[str | None], dict[int, Errors]]] = [
    (
        "not_null",
        ColumnContract(nullable=False),
        ["a", None, "c"],
        {2: [("not_null", "v", "is null but the contract says nullable: false")]},
    ),
    (
        "integer",
        ColumnContract(type="integer"),
        ["1", "-7", " 8 ", "x", "1.5", "2.0", None],
        {
            4: [("type", "v", "value 'x' is not an integer")],
            5: [("type", "v", "value '1.5' is not an integer")],
        },
    ),
    (
        "double",
        ColumnContract(type="double"),
        ["1.5", "-2e3", "abc", "1,5"],
        {
            3: [("type", "v", "value 'abc' is not a double")],
            4: [("type", "v", "value '1,5' is not a double")],
        },
    ),
    (
        "boolean",
        ColumnContract(type="boolean"),
        ["true", "false", "maybe"],
        {3: [("type", "v", "value 'maybe' is not a boolean")]},
    ),
    (
        "date",
        ColumnContract(type="date"),
        ["2024-01-31", "2024-02-30", "31/01/2024"],
        {
            2: [("type", "v", "value '2024-02-30' is not a date")],
            3: [("type", "v", "value '31/01/2024' is not a date")],
        },
    ),
    (
        "timestamp",
        ColumnContract(type="timestamp"),
        [
            "2024-01-31T10:00:00Z",
            "2024-01-31T10:00:00+02:00",
            "2024-01-31 10:00:00.5-05:30",
            "2024-13-01T00:00Z",
            "noon",
        ],
        {
            4: [("type", "v", "value '2024-13-01T00:00Z' is not a timestamp")],
            5: [("type", "v", "value 'noon' is not a timestamp")],
        },
    ),
    (
        "timestamp-strftime",
        ColumnContract(type="timestamp", strftime="%d/%m/%Y %H:%M"),
        ["31/01/2024 10:30", "2024-01-31 10:30", "32/01/2024 10:30"],
        {
            2: [
                (
                    "type",
                    "v",
                    "value '2024-01-31 10:30' is not a timestamp in format %d/%m/%Y %H:%M",
                )
            ],
            3: [
                (
                    "type",
                    "v",
                    "value '32/01/2024 10:30' is not a timestamp in format %d/%m/%Y %H:%M",
                )
            ],
        },
    ),
    (
        "min-max",
        ColumnContract(type="integer", min=0, max=10),
        ["0", "10", "-1", "11"],
        {
            3: [("min", "v", "value '-1' is below the minimum 0")],
            4: [("max", "v", "value '11' is above the maximum 10")],
        },
    ),
    (
        "min-max-double",
        ColumnContract(type="double", min=0.5, max=2.5),
        ["0.5", "2.5", "0.49", "2.51"],
        {
            3: [("min", "v", "value '0.49' is below the minimum 0.5")],
            4: [("max", "v", "value '2.51' is above the maximum 2.5")],
        },
    ),
    (
        "values",
        ColumnContract(values=["paid", "new"]),
        ["paid", "new", "lost", "Paid"],
        {
            3: [("values", "v", "value 'lost' is not one of: paid, new")],
            4: [("values", "v", "value 'Paid' is not one of: paid, new")],
        },
    ),
    (
        "values-integer",
        ColumnContract(type="integer", values=[1, 2]),
        ["1", "02", "3"],
        {3: [("values", "v", "value '3' is not one of: 1, 2")]},
    ),
    (
        "regex",
        ColumnContract(regex=r"[A-Z]{2}-\d+"),
        ["AB-12", "ab-12", "AB-12x", "xAB-12"],
        {
            2: [("regex", "v", "value 'ab-12' does not match the pattern")],
            3: [("regex", "v", "value 'AB-12x' does not match the pattern")],
            4: [("regex", "v", "value 'xAB-12' does not match the pattern")],
        },
    ),
    (
        "email",
        ColumnContract(format="email"),
        ["ann@example.com", "first.last+tag@mail.co.uk", "ann", "ann@localhost", "a b@example.com"],
        {
            3: [("format", "v", "value 'ann' is not a valid email")],
            4: [("format", "v", "value 'ann@localhost' is not a valid email")],
            5: [("format", "v", "value 'a b@example.com' is not a valid email")],
        },
    ),
    (
        "ipv4",
        ColumnContract(format="ipv4"),
        ["10.0.0.1", "255.255.255.255", "256.1.1.1", "1.2.3", "::1"],
        {
            3: [("format", "v", "value '256.1.1.1' is not a valid ipv4")],
            4: [("format", "v", "value '1.2.3' is not a valid ipv4")],
            5: [("format", "v", "value '::1' is not a valid ipv4")],
        },
    ),
    (
        "ipv6",
        ColumnContract(format="ipv6"),
        [
            "::1",
            "2001:db8::1",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
            "10.0.0.1",
            "fe80::1::2",
            "12345::",
        ],
        {
            4: [("format", "v", "value '10.0.0.1' is not a valid ipv6")],
            5: [("format", "v", "value 'fe80::1::2' is not a valid ipv6")],
            6: [("format", "v", "value '12345::' is not a valid ipv6")],
        },
    ),
    (
        "ip",
        ColumnContract(format="ip"),
        ["10.0.0.1", "2001:db8::1", "10.0.0.256", "localhost"],
        {
            3: [("format", "v", "value '10.0.0.256' is not a valid ip")],
            4: [("format", "v", "value 'localhost' is not a valid ip")],
        },
    ),
    (
        "iso_timestamp",
        ColumnContract(format="iso_timestamp"),
        [
            "2024-01-31T10:00:00Z",
            "2024-01-31 10:00:00.123+02:00",
            "2024-01-31",
            "2024-02-30T00:00:00Z",
            "today",
        ],
        {
            3: [("format", "v", "value '2024-01-31' is not a valid iso_timestamp")],
            4: [("format", "v", "value '2024-02-30T00:00:00Z' is not a valid iso_timestamp")],
            5: [("format", "v", "value 'today' is not a valid iso_timestamp")],
        },
    ),
    (
        "uuid",
        ColumnContract(format="uuid"),
        [
            "123e4567-e89b-12d3-a456-426614174000",
            "123E4567-E89B-12D3-A456-426614174000",
            "123e4567e89b12d3a456426614174000",
            "123e4567-e89b-12d3-a456-42661417400g",
        ],
        {
            3: [("format", "v", "value '123e4567e89b12d3a456426614174000' is not a valid uuid")],
            4: [
                ("format", "v", "value '123e4567-e89b-12d3-a456-42661417400g' is not a valid uuid")
            ],
        },
    ),
    (
        "lengths",
        ColumnContract(min_length=2, max_length=4),
        ["ab", "abcd", "a", "abcde", ""],
        {
            3: [("min_length", "v", "is shorter than 2 characters")],
            4: [("max_length", "v", "is longer than 4 characters")],
            5: [("min_length", "v", "is shorter than 2 characters")],
        },
    ),
]


@pytest.mark.parametrize(
    ("spec", "values", "expected"),
    [case[1:] for case in RULE_CASES],
    ids=[case[0] for case in RULE_CASES],
)
def test_each_rule_rejects_exactly_the_rows_that_break_it_with_rule_column_and_reason(
    engine, spec, values, expected
):
    outcome = run(engine, {"v": values}, one_column(spec))

    assert outcome.errors == expected
    assert [row["__sw_row"] for row in outcome.valid] == [
        n for n in range(1, len(values) + 1) if n not in expected
    ]
    assert (outcome.result.rows_valid, outcome.result.rows_rejected) == (
        len(values) - len(expected),
        len(expected),
    )


def test_rejected_rows_keep_their_file_row_and_raw_source_values(engine):
    outcome = run(
        engine,
        {"id": ["1", "x"], "note": ["ok", "it's"]},
        Contract(columns={"id": ColumnContract(type="integer")}),
    )

    (rejected,) = outcome.rejected.values()
    assert (rejected["__sw_file"], rejected["__sw_row"]) == ("in.csv", 2)
    assert json.loads(rejected["raw"]) == {"id": "x", "note": "it's"}
    assert json.loads(rejected["payload"]) == {"id": "x", "note": "it's"}


def test_a_required_column_missing_from_the_source_rejects_every_row(engine):
    contract = Contract(
        columns={
            "id": ColumnContract(),
            "user_id": ColumnContract(required=True),
            "country": ColumnContract(nullable=False),
        }
    )

    outcome = run(engine, {"id": ["1", "2"]}, contract)

    assert outcome.errors == {
        row: [
            ("missing_column", "user_id", "column 'user_id' is missing from the source"),
            ("missing_column", "country", "column 'country' is missing from the source"),
        ]
        for row in (1, 2)
    }
    assert outcome.valid == []


def test_an_optional_column_missing_from_the_source_is_null_with_its_contract_type(engine):
    contract = Contract(
        columns={
            "id": ColumnContract(type="integer"),
            "score": ColumnContract(type="double", min=0),
        }
    )

    outcome = run(engine, {"id": ["1", "2"]}, contract)

    assert outcome.rejected == {}
    assert outcome.kept("score") == [None, None]
    assert engine.columns(outcome.result.valid)[:2] == [("id", "BIGINT"), ("score", "DOUBLE")]


def test_a_row_breaking_three_rules_lists_all_three_errors(engine):
    contract = Contract(
        columns={
            "code": ColumnContract(regex="[A-Z]+", min_length=3),
            "qty": ColumnContract(type="integer", max=5),
        }
    )

    outcome = run(engine, {"code": ["ABC", "x"], "qty": ["1", "9"]}, contract)

    assert outcome.errors == {
        2: [
            ("regex", "code", "value 'x' does not match the pattern"),
            ("min_length", "code", "is shorter than 3 characters"),
            ("max", "qty", "value '9' is above the maximum 5"),
        ]
    }
    assert outcome.kept("code") == ["ABC"]


def test_valid_rows_carry_the_contract_types(engine):
    contract = Contract(
        columns={
            "s": ColumnContract(type="string"),
            "i": ColumnContract(type="integer"),
            "b": ColumnContract(type="bigint"),
            "d": ColumnContract(type="double"),
            "f": ColumnContract(type="float"),
            "m": ColumnContract(type="decimal", precision=10, scale=2),
            "ok": ColumnContract(type="boolean"),
            "day": ColumnContract(type="date"),
            "at": ColumnContract(type="timestamp"),
            "local": ColumnContract(type="timestamp_ntz"),
            "doc": ColumnContract(type="json"),
            "eu_day": ColumnContract(type="date", strftime="%d/%m/%Y"),
        }
    )
    values = {
        "s": "x",
        "i": "42",
        "b": "9007199254740993",
        "d": "1.25",
        "f": "-0.5",
        "m": "12.34",
        "ok": "true",
        "day": "2024-01-31",
        "at": "2024-01-31T10:00:00+02:00",
        "local": "2024-01-31 10:00:00",
        "doc": '{"a": [1]}',
        "eu_day": "31/01/2024",
    }

    outcome = run(engine, {k: [v] for k, v in values.items()}, contract)

    assert outcome.rejected == {}
    assert engine.columns(outcome.result.valid) == [
        ("s", "VARCHAR"),
        ("i", "BIGINT"),
        ("b", "BIGINT"),
        ("d", "DOUBLE"),
        ("f", "DOUBLE"),
        ("m", "DECIMAL(10,2)"),
        ("ok", "BOOLEAN"),
        ("day", "DATE"),
        ("at", "TIMESTAMP WITH TIME ZONE"),
        ("local", "TIMESTAMP"),
        ("doc", "VARCHAR"),
        ("eu_day", "DATE"),
        ("__sw_file", "VARCHAR"),
        ("__sw_row", "BIGINT"),
    ]
    (row,) = outcome.valid
    assert {k: v for k, v in row.items() if not k.startswith("__sw_")} == {
        "s": "x",
        "i": 42,
        "b": 9007199254740993,
        "d": 1.25,
        "f": -0.5,
        "m": Decimal("12.34"),
        "ok": True,
        "day": date(2024, 1, 31),
        "at": datetime(2024, 1, 31, 8, tzinfo=UTC),
        "local": datetime(2024, 1, 31, 10),
        "doc": '{"a": [1]}',
        "eu_day": date(2024, 1, 31),
    }
    assert outcome.result.columns == list(values)


def test_iso_timestamps_with_z_and_offsets_become_the_same_utc_instant(engine):
    values = [
        "2024-01-31T10:00:00Z",
        "2024-01-31T12:00:00+02:00",
        "2024-01-31T04:30:00-05:30",
        "2024-01-31 10:00:00",
    ]

    outcome = run(
        engine, {"at": values}, Contract(columns={"at": ColumnContract(type="timestamp")})
    )

    assert outcome.kept("at") == [datetime(2024, 1, 31, 10, tzinfo=UTC)] * 4


def test_a_strftime_timestamp_is_read_as_utc(engine):
    contract = Contract(columns={"at": ColumnContract(type="timestamp", strftime="%d/%m/%Y %H:%M")})

    outcome = run(engine, {"at": ["31/01/2024 10:30"]}, contract)

    assert outcome.kept("at") == [datetime(2024, 1, 31, 10, 30, tzinfo=UTC)]


def test_reasons_quote_the_value_except_for_pii_columns(engine):
    contract = Contract(
        columns={
            "email": ColumnContract(format="email", max_length=10),
            "ip": ColumnContract(format="ipv4"),
            "age": ColumnContract(type="integer", min=0),
            "tier": ColumnContract(values=["gold"]),
        }
    )
    secret_email, secret_ip = "not-an-email-at-all", "999.1.1.1"

    outcome = run(
        engine,
        {"email": [secret_email], "ip": [secret_ip], "age": ["-3"], "tier": ["tin"]},
        contract,
        pii={"email": "hash", "ip": "truncate_ip"},
    )

    errors = outcome.errors[1]
    assert [(rule, column) for rule, column, _ in errors] == [
        ("format", "email"),
        ("max_length", "email"),
        ("format", "ip"),
        ("min", "age"),
        ("values", "tier"),
    ]
    reasons = {column: reason for rule, column, reason in errors if rule != "max_length"}
    assert reasons["email"] == "value is not a valid email"
    assert reasons["ip"] == "value is not a valid ipv4"
    assert all(secret_email not in reason and secret_ip not in reason for _, _, reason in errors)
    assert reasons["age"] == "value '-3' is below the minimum 0"
    assert reasons["tier"] == "value 'tin' is not one of: gold"


def test_a_pii_type_violation_does_not_quote_the_value(engine):
    outcome = run(
        engine,
        {"birth": ["1984-13-45"]},
        Contract(columns={"birth": ColumnContract(type="date")}),
        pii={"birth": "redact"},
    )

    assert outcome.errors == {1: [("type", "birth", "value is not a date")]}


def test_reasons_survive_values_with_quotes(engine):
    outcome = run(
        engine,
        {"name": ["O'Brien"]},
        Contract(columns={"name": ColumnContract(values=["Smith", "it's"])}),
    )

    assert outcome.errors == {1: [("values", "name", "value 'O'Brien' is not one of: Smith, it's")]}


# Evolution


EXTRA = {"id": ["1", "2"], "extra": ["e", None]}


def test_evolve_keeps_a_column_the_contract_does_not_name(engine):
    outcome = run(
        engine, EXTRA, Contract(columns={"id": ColumnContract(type="integer")}, evolution="evolve")
    )

    assert outcome.result.columns == ["id", "extra"]
    assert [(r["id"], r["extra"]) for r in outcome.valid] == [(1, "e"), (2, None)]
    assert outcome.rejected == {}


def test_discard_column_drops_a_column_the_contract_does_not_name(engine):
    outcome = run(
        engine,
        EXTRA,
        Contract(columns={"id": ColumnContract(type="integer")}, evolution="discard_column"),
    )

    assert outcome.result.columns == ["id"]
    assert "extra" not in outcome.valid[0]
    assert outcome.kept("id") == [1, 2]
    assert outcome.rejected == {}


def test_freeze_rejects_only_rows_carrying_a_value_in_an_unknown_column(engine):
    outcome = run(
        engine, EXTRA, Contract(columns={"id": ColumnContract(type="integer")}, evolution="freeze")
    )

    assert outcome.errors == {
        1: [
            ("unknown_column", "extra", "column 'extra' is not in the contract (evolution: freeze)")
        ]
    }
    assert outcome.result.columns == ["id"]
    assert outcome.kept("id") == [2]


def test_freeze_names_an_unknown_column_whose_name_holds_a_quote(engine):
    outcome = run(
        engine,
        {"id": ["1"], "o'clock": ["5"]},
        Contract(columns={"id": ColumnContract()}, evolution="freeze"),
    )

    assert outcome.errors == {
        1: [
            (
                "unknown_column",
                "o'clock",
                "column 'o'clock' is not in the contract (evolution: freeze)",
            )
        ]
    }


# on_violation: warn


def test_warn_keeps_rows_breaking_value_rules_and_counts_them_but_still_rejects_bad_types(engine):
    contract = Contract(
        columns={
            "qty": ColumnContract(type="integer", min=0),
            "code": ColumnContract(nullable=False, max_length=3, regex="[a-z]+"),
        },
        on_violation="warn",
    )

    outcome = run(
        engine,
        {"qty": ["-5", "x", "3", "4", "1"], "code": ["abc", "abc", None, "abcdef", "ab"]},
        contract,
    )

    assert outcome.errors == {2: [("type", "qty", "value 'x' is not an integer")]}
    assert [(r["qty"], r["code"]) for r in outcome.valid] == [
        (-5, "abc"),
        (3, None),
        (4, "abcdef"),
        (1, "ab"),
    ]
    assert (
        outcome.result.rows_valid,
        outcome.result.rows_rejected,
        outcome.result.rows_warned,
    ) == (4, 1, 3)


def test_warn_still_rejects_a_missing_required_column(engine):
    contract = Contract(columns={"id": ColumnContract(required=True)}, on_violation="warn")

    outcome = run(engine, {"other": ["1"]}, contract)

    assert outcome.errors == {
        1: [("missing_column", "id", "column 'id' is missing from the source")]
    }
    assert outcome.result.rows_warned == 0


def test_dead_letter_mode_counts_no_warnings(engine):
    outcome = run(
        engine,
        {"qty": ["-1", "2"]},
        Contract(columns={"qty": ColumnContract(type="integer", min=0)}),
    )

    assert (outcome.result.rows_rejected, outcome.result.rows_warned) == (1, 0)


# NULLs


def test_null_in_a_nullable_column_breaks_no_value_rule(engine):
    contract = Contract(
        columns={
            "qty": ColumnContract(type="integer", min=1, max=3, values=[1, 2]),
            "code": ColumnContract(regex="[A-Z]+", format="uuid", min_length=2),
        }
    )

    outcome = run(engine, {"qty": [None, "2"], "code": [None, None]}, contract)

    assert outcome.rejected == {}
    assert [(r["qty"], r["code"]) for r in outcome.valid] == [(None, None), (2, None)]


def test_a_contract_whose_columns_are_all_absent_and_optional_keeps_every_row(engine):
    outcome = run(
        engine, {"other": ["a", "b"]}, Contract(columns={"id": ColumnContract(type="integer")})
    )

    assert outcome.rejected == {}
    assert [(r["id"], r["other"]) for r in outcome.valid] == [(None, "a"), (None, "b")]


def test_a_strftime_format_with_a_quote_still_builds_its_reason(engine: DuckDBEngine) -> None:
    table = source(engine, {"at": ["15 o'clock 2025-01-15", "noon"]})
    contract = Contract(
        columns={"at": ColumnContract(type="timestamp_ntz", strftime="%H o'clock %Y-%m-%d")}
    )

    result = apply_contract(engine, table, contract, pii={}, masked_payload=lambda cols: "'{}'")

    errors = fetch(engine, result.rejected)
    assert (result.rows_valid, result.rows_rejected) == (1, 1)
    assert (
        errors[0]["__sw_errors"][0]["reason"]
        == "value 'noon' is not a timestamp_ntz in format %H o'clock %Y-%m-%d"
    )


def test_a_null_is_not_a_format_violation_and_typed_timestamps_pass_iso(engine) -> None:
    from sluiceway.checks.contract import apply_contract
    from sluiceway.core.spec import Contract

    engine.run(
        "CREATE TABLE fmt AS SELECT * FROM (VALUES "
        "('2024-01-05T10:00:00Z', TIMESTAMPTZ '2024-01-05 10:00:00+00', '2024-01-05'), "
        "(NULL, NULL, NULL), ('yesterday', TIMESTAMPTZ '2024-01-06 11:00:00+00', '05/01/2024')"
        ") t(ts_text, ts_typed, day)"
    )
    engine.run("ALTER TABLE fmt ADD COLUMN __sw_file VARCHAR DEFAULT 'f'")
    engine.run("ALTER TABLE fmt ADD COLUMN __sw_row BIGINT DEFAULT 1")
    contract = Contract.model_validate(
        {
            "columns": {
                "ts_text": {"type": "string", "format": "iso_timestamp"},
                "ts_typed": {"type": "timestamp", "format": "iso_timestamp"},
                "day": {"type": "string", "format": "iso_date"},
            }
        }
    )

    result = apply_contract(engine, "fmt", contract, pii={}, masked_payload=lambda c: "'{}'")

    assert (result.rows_valid, result.rows_rejected) == (2, 1)


def test_case_renames_map_a_column_spelled_in_another_case_and_leave_ambiguity_alone() -> None:
    from sluiceway.checks.contract import case_renames

    contract = Contract.model_validate(
        {"columns": {"email": {"type": "string"}, "id": {"type": "string"}, "x": {}}}
    )

    assert case_renames(contract, ["Email", "ID", "x"]) == {"Email": "email", "ID": "id"}
    assert case_renames(contract, ["email", "Email"]) == {}  # exact name wins
    assert case_renames(contract, ["Id", "ID"]) == {}  # two candidates: which one is unclear


def test_a_change_capture_delete_is_not_held_to_the_value_rules(engine):
    """A delete carries the key only (or the old row): rejecting it for its NULL values would
    leave the deleted row in the table for good. Other changes are checked as rows are."""
    contract = Contract(
        columns={
            "id": ColumnContract(type="bigint", nullable=False),
            "n": ColumnContract(type="integer", nullable=False, min=0),
            "__sw_op": ColumnContract(type="string"),
        }
    )

    outcome = run(
        engine,
        {"id": ["1", "2", "3", "4"], "n": [None, "-5", None, "7"], "__sw_op": ["d", "d", "u", "i"]},
        contract,
    )

    assert outcome.kept("id") == [1, 2, 4]
    assert sorted(outcome.rejected) == [3]
