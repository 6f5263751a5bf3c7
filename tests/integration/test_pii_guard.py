"""A PII column copied or renamed by a step must not reach the sink in clear."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

from sluiceway.core.loader import pipeline_from_dict
from sluiceway.core.runner import RunOptions, run_pipeline

KEYS = {
    "SLUICE_HMAC_KEY": "hmac-key",
    "SLUICE_MASK_SALT": "salt",
    "SLUICE_ENCRYPTION_KEY": "1" * 64,
}


def write_users(folder: Path, rows: int = 50) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["user_id,email,country"] + [f"u{i},user{i}@example.com,FR" for i in range(rows)]
    (folder / "users.csv").write_text("\n".join(lines) + "\n")


def spec(query: str) -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "users",
        "sources": {"users": {"type": "files", "path": "in/"}},
        "steps": [{"sql": query}],
        "pii": {"email": "hmac"},
        "sinks": [{"type": "delta", "path": "lake/users", "mode": "append"}],
    }


def run(tmp_path: Path, query: str):
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        environ=KEYS,
    )
    return run_pipeline(pipeline_from_dict(spec(query)), options)


def test_a_step_that_renames_a_pii_column_fails_and_publishes_nothing(tmp_path: Path) -> None:
    write_users(tmp_path / "in")

    result = run(tmp_path, "SELECT user_id, email AS contact, country FROM input")

    assert result.status == "failed"
    assert "'contact'" in (result.error or "") and "pii:" in (result.error or "")
    assert "user1@example.com" not in (result.error or "")
    assert not (tmp_path / "lake" / "users").exists()


@pytest.mark.parametrize(
    ("expression", "column"),
    [
        ("'mailto:' || email", "link"),
        ("upper(email)", "shout"),
        ("[email]", "emails"),
        ("struct_pack(e := email)", "wrapped"),
        ("map([email], [1])", "keyed"),
        ("'{\"to\": \"' || email || '\"}'", "doc"),
        ("'Contact ' || email || '.'", "note"),
    ],
)
def test_a_step_that_wraps_a_pii_column_fails_and_publishes_nothing(
    tmp_path: Path, expression: str, column: str
) -> None:
    write_users(tmp_path / "in")

    result = run(tmp_path, f"SELECT user_id, {expression} AS {column}, country FROM input")

    assert result.status == "failed"
    assert f"'{column}'" in (result.error or "") and "pii:" in (result.error or "")
    assert not (tmp_path / "lake" / "users").exists()


def test_text_that_only_shares_a_part_of_the_pii_values_passes(tmp_path: Path) -> None:
    # The domain is not the address: a column of domains is not a copy of the emails.
    write_users(tmp_path / "in")

    result = run(tmp_path, "SELECT *, split_part(email, '@', 2) || '-' || user_id AS d FROM input")

    assert result.ok, result.error


def test_a_step_that_keeps_pii_under_its_name_publishes_it_masked(tmp_path: Path) -> None:
    write_users(tmp_path / "in")

    result = run(tmp_path, "SELECT *, upper(country) AS country_code FROM input")

    assert result.ok, result.error
    emails = DeltaTable(str(tmp_path / "lake" / "users")).to_pyarrow_table()["email"].to_pylist()
    assert len(emails) == 50
    assert not any("@" in e for e in emails)


def test_pii_values_a_step_changes_are_still_masked_row_by_row(tmp_path: Path) -> None:
    import hmac

    folder = tmp_path / "in"
    folder.mkdir(parents=True)
    lines = ["user_id,email,country"] + [f"u{i},User{i}@Example.com,FR" for i in range(30)]
    (folder / "users.csv").write_text("\n".join(lines) + "\n")

    result = run(tmp_path, "SELECT * REPLACE (lower(email) AS email) FROM input")

    assert result.ok, result.error
    table = DeltaTable(str(tmp_path / "lake" / "users")).to_pyarrow_table().sort_by("user_id")
    expected = {
        f"u{i}": hmac.new(b"hmac-key", f"user{i}@example.com".encode(), "sha256").hexdigest()
        for i in range(30)
    }
    assert (
        dict(zip(table["user_id"].to_pylist(), table["email"].to_pylist(), strict=True)) == expected
    )


def test_small_numbers_in_a_list_or_text_are_not_taken_for_a_numeric_pii_id(
    tmp_path: Path,
) -> None:
    # user_id is PII; the item ids are other numbers of the same range.
    folder = tmp_path / "in"
    folder.mkdir(parents=True)
    lines = ["user_id,email,items"] + [
        f"{i},user{i}@example.com,{(i * 7) % 50}|{(i * 13) % 50}" for i in range(1, 51)
    ]
    (folder / "users.csv").write_text("\n".join(lines) + "\n")
    query = (
        "SELECT user_id, email, list_transform(string_split(items, '|'), lambda x: x::INT) AS ids, "
        "'item ' || replace(items, '|', ' and ') AS item_text FROM input"
    )
    spec_with_ids = spec(query)
    spec_with_ids["pii"] = {"email": "hmac", "user_id": "hmac"}
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        environ=KEYS,
    )

    result = run_pipeline(pipeline_from_dict(spec_with_ids), options)

    assert result.ok, result.error


def contract_spec() -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "users",
        "sources": {
            "users": {
                "type": "files",
                "path": "in/",
                "contract": {
                    "columns": {
                        "user_id": {"type": "string", "nullable": False},
                        "email": {"type": "string", "format": "email"},
                        "country": {"type": "string", "values": ["FR"]},
                    },
                    "evolution": "freeze",
                    "on_violation": "dead_letter",
                },
            }
        },
        "pii": {"email": "hmac"},
        "sinks": [{"type": "delta", "path": "lake/users", "mode": "append"}],
    }


def test_a_header_that_spells_a_contract_column_in_another_case_is_checked_and_masked(
    tmp_path: Path,
) -> None:
    """`Email` in the file is the contract's `email`, as SQL resolves names: masked, checked,
    and not passed beside a NULL `email` in clear."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "users.csv").write_text(
        "USER_ID,Email,Country\nu1,one@example.com,FR\nu2,two@example.com,DE\n"
    )
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        environ=KEYS,
    )

    result = run_pipeline(pipeline_from_dict(contract_spec()), options)

    assert result.status == "succeeded", result.error
    assert (result.accounting.rows_written, result.accounting.rows_rejected) == (1, 1)
    rows = DeltaTable(str(tmp_path / "lake" / "users")).to_pyarrow_table().to_pylist()
    assert [sorted(row) for row in rows] == [["country", "email", "user_id"]]
    assert rows[0]["user_id"] == "u1" and rows[0]["country"] == "FR"
    assert rows[0]["email"] and "@" not in rows[0]["email"]
    assert result.rejected_by_rule == {"country.values": 1}
