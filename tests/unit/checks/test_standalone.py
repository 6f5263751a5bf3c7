"""`check_data`: table checks on files, outside any pipeline."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sluiceway.checks.standalone import check_data
from sluiceway.errors import SourceError, SpecError

ORDERS_CSV = "order_id,amount,status\n1,10.5,paid\n2,20,paid\n3,,open\n4,7.25,paid\n"


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def statuses(results: list) -> dict[str, str]:
    return {r.name: r.status for r in results}


def test_csv_columns_are_typed_so_between_compares_numbers(tmp_path) -> None:
    (tmp_path / "orders.csv").write_text(ORDERS_CSV)
    checks = write(
        tmp_path / "checks.yaml",
        """\
        version: 1
        checks:
          - not_null: {column: order_id}
          - between: {column: amount, min_value: 5, max_value: 15}
        """,
    )

    results = check_data(checks, "orders.csv", base_dir=tmp_path)

    assert statuses(results) == {"not_null(order_id)": "passed", "between(amount)": "failed"}
    between = results[1]
    assert between.unexpected_count == 1
    assert between.rows_checked == 4


def test_parquet_numeric_columns_work_with_mean_between(tmp_path) -> None:
    pq.write_table(
        pa.table({"amount": [10, 20, 30], "qty": [1.5, 2.5, 3.5]}), tmp_path / "a.parquet"
    )
    checks = write(
        tmp_path / "checks.yaml",
        """\
        version: 1
        checks:
          - mean_between: {column: amount, min_value: 19, max_value: 21}
          - mean_between: {column: qty, min_value: 3, max_value: 4}
        """,
    )

    results = check_data(checks, str(tmp_path / "a.parquet"), base_dir=Path("/"))

    assert [r.status for r in results] == ["passed", "failed"]
    assert results[0].observed_value == pytest.approx(20)
    assert results[1].observed_value == pytest.approx(2.5)


def test_a_pipeline_spec_without_data_checks_its_primary_source(tmp_path) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "orders.csv").write_text(ORDERS_CSV)
    spec = write(
        tmp_path / "pipeline.yaml",
        """\
        version: 1
        pipeline: orders
        sources:
          orders: {type: files, path: in/}
        checks:
          - row_count_between: {min_value: 5}
          - unique: {column: order_id}
        sinks:
          - {type: delta, path: lake/orders}
        """,
    )

    results = check_data(spec, None, base_dir=Path("/"))

    assert statuses(results) == {"row_count_between": "failed", "unique(order_id)": "passed"}
    assert results[0].observed_value == 4


def test_ndjson_numbers_are_typed(tmp_path) -> None:
    (tmp_path / "e.ndjson").write_text('{"n": 3}\n{"n": 12}\n')
    checks = write(
        tmp_path / "checks.yaml",
        "version: 1\nchecks:\n  - max_between: {column: n, min_value: 10, max_value: 20}\n",
    )

    results = check_data(checks, "e.ndjson", base_dir=tmp_path)

    assert results[0].status == "passed"
    assert results[0].observed_value == 12


def test_an_unknown_check_name_is_a_spec_error_with_line_and_suggestion(tmp_path) -> None:
    checks = write(
        tmp_path / "checks.yaml",
        """\
        version: 1
        checks:
          - not_null: {column: a}
          - uniqe: {column: a}
        """,
    )

    with pytest.raises(SpecError) as raised:
        check_data(checks, "whatever.csv", base_dir=tmp_path)

    [problem] = raised.value.problems
    assert (problem.path, problem.line) == ("checks[1].uniqe", 4)
    assert "Did you mean 'unique'?" in problem.message


def test_an_unknown_top_level_key_of_a_checks_file_is_reported(tmp_path) -> None:
    checks = write(tmp_path / "checks.yaml", "version: 1\nchekcs: []\n")

    with pytest.raises(SpecError) as raised:
        check_data(checks, "x.csv", base_dir=tmp_path)

    paths = {p.path: p.message for p in raised.value.problems}
    assert "Did you mean 'checks'?" in paths["chekcs"]
    assert "checks" in paths


def test_a_checks_file_without_data_is_a_source_error(tmp_path) -> None:
    checks = write(tmp_path / "checks.yaml", "version: 1\nchecks:\n  - not_null: {column: a}\n")

    with pytest.raises(SourceError, match="--data"):
        check_data(checks, None, base_dir=tmp_path)


def test_a_file_whose_content_is_not_its_format_is_a_source_error(tmp_path) -> None:
    (tmp_path / "fake.parquet").write_text("a,b\n1,2\n")
    checks = write(tmp_path / "checks.yaml", "version: 1\nchecks:\n  - not_null: {column: a}\n")

    with pytest.raises(SourceError, match="PARQUET"):
        check_data(checks, "fake.parquet", base_dir=tmp_path)


def test_a_file_a_check_names_resolves_next_to_the_checks_file(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "quality"
    folder.mkdir()
    (folder / "orders.csv").write_text(ORDERS_CSV)
    (folder / "known_orders.csv").write_text("order_id\n1\n2\n3\n")
    checks = write(
        folder / "checks.yaml",
        """\
        version: 1
        checks:
          - values_exist_in: {column: order_id, to_table: known_orders.csv}
        """,
    )
    monkeypatch.chdir(tmp_path)

    [result] = check_data(checks, str(folder / "orders.csv"), base_dir=tmp_path)

    assert result.status == "failed", result.message
    assert result.unexpected_count == 1
