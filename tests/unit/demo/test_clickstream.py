"""The clickstream sample holds exactly the defects it reports, and is deterministic."""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from sluiceway.demo import clickstream
from sluiceway.demo.clickstream import (
    EVENT_COLUMNS,
    EVENT_TYPES,
    GeneratedSample,
    generate_clickstream,
    write_manifest,
)

ROWS = 20_000
DAY = date(2025, 3, 9)
VALID_TIMESTAMP = "try_strptime(timestamp, '%Y-%m-%dT%H:%M:%S.%gZ')"
VALID_EMAIL = r"regexp_full_match(email, '[a-z0-9.+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+')"
DEFECT_FLAGS = {
    "null_user_id": "user_id IS NULL",
    "unknown_event_type": f"event_type NOT IN {tuple(EVENT_TYPES)}",
    "negative_price": "CAST(product_price AS DECIMAL(9, 2)) < 0",
    "malformed_timestamp": f"{VALID_TIMESTAMP} IS NULL",
    "bad_email": f"NOT {VALID_EMAIL}",
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> GeneratedSample:
    return generate_clickstream(tmp_path_factory.mktemp("sample"), rows=ROWS, seed=11, day=DAY)


@pytest.fixture(scope="module")
def events(sample: GeneratedSample) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection holding the parsed rows in `events` and DuckDB's rejects."""
    con = duckdb.connect()
    load_events(con, sample.files)
    yield con
    con.close()


def load_events(con: duckdb.DuckDBPyConnection, files: tuple[Path, ...]) -> None:
    """Parse every column of ``files`` into ``events``; broken lines go to ``reject_errors``."""
    con.execute(
        "CREATE TABLE events AS SELECT * FROM read_csv($files, header = true, delim = ',', "
        "quote = '\"', escape = '\"', all_varchar = true, store_rejects = true)",
        {"files": [str(path) for path in files]},
    )


def scalar(con: duckdb.DuckDBPyConnection, sql: str) -> Any:
    row = con.execute(sql).fetchone()
    assert row is not None
    return row[0]


def data_lines(path: Path) -> list[bytes]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        return file.read().splitlines()[1:]


def test_every_file_starts_with_the_header_and_rows_counts_the_lines_after_it(
    sample: GeneratedSample,
) -> None:
    header = (",".join(EVENT_COLUMNS) + "\n").encode()
    assert [path.read_bytes()[: len(header)] for path in sample.files] == [header] * 4
    assert sum(len(data_lines(path)) for path in sample.files) == sample.rows == ROWS


def test_broken_lines_are_exactly_the_lines_duckdb_rejects(
    sample: GeneratedSample, events: duckdb.DuckDBPyConnection
) -> None:
    rejected = dict(
        events.execute(
            "SELECT error_type = 'INVALID ENCODING', count(DISTINCT (file_id, line)) "
            "FROM reject_errors GROUP BY ALL"
        ).fetchall()
    )
    assert rejected == {
        False: sample.defects.malformed_lines,
        True: sample.defects.invalid_utf8_lines,
    }
    parsed = scalar(events, "SELECT count(*) FROM events")
    broken = sample.defects.malformed_lines + sample.defects.invalid_utf8_lines
    assert parsed == sample.rows - broken


def test_broken_lines_are_about_a_tenth_of_the_defect_rate(sample: GeneratedSample) -> None:
    assert sample.defects.malformed_lines == sample.defects.invalid_utf8_lines == ROWS // 1000


def test_invalid_utf8_lines_hold_the_bytes_ff_fe(sample: GeneratedSample) -> None:
    lines = [line for path in sample.files for line in data_lines(path)]
    assert sum(b"\xff\xfe" in line for line in lines) == sample.defects.invalid_utf8_lines


@pytest.mark.parametrize("defect", sorted(DEFECT_FLAGS))
def test_each_field_defect_occurs_on_exactly_the_reported_number_of_rows(
    defect: str, sample: GeneratedSample, events: duckdb.DuckDBPyConnection
) -> None:
    found = scalar(events, f"SELECT count(*) FROM events WHERE {DEFECT_FLAGS[defect]}")
    assert found == getattr(sample.defects, defect) == ROWS // 100


def test_no_row_carries_more_than_one_field_defect(events: duckdb.DuckDBPyConnection) -> None:
    flags = " + ".join(f"CAST(coalesce({flag}, false) AS INT)" for flag in DEFECT_FLAGS.values())
    assert scalar(events, f"SELECT max({flags}) FROM events") == 1


def test_duplicates_are_rows_minus_distinct_event_ids_and_repeat_every_field(
    sample: GeneratedSample, events: duckdb.DuckDBPyConnection
) -> None:
    parsed = scalar(events, "SELECT count(*) FROM events")
    distinct_ids = scalar(events, "SELECT count(DISTINCT event_id) FROM events")
    distinct_rows = scalar(events, "SELECT count(*) FROM (SELECT DISTINCT * FROM events)")
    assert parsed - distinct_ids == parsed - distinct_rows == sample.defects.duplicates > 0


def test_duplicates_are_copies_of_clean_rows(events: duckdb.DuckDBPyConnection) -> None:
    any_defect = " OR ".join(f"coalesce({flag}, false)" for flag in DEFECT_FLAGS.values())
    dirty_copies = scalar(
        events,
        "SELECT count(*) FROM (SELECT * FROM events GROUP BY ALL HAVING count(*) > 1) "
        f"WHERE {any_defect}",
    )
    assert dirty_copies == 0


def test_duplicates_appear_after_their_original_in_file_order(sample: GeneratedSample) -> None:
    lines = [line for path in sample.files for line in data_lines(path)]
    first_seen: dict[bytes, int] = {}
    for position, line in enumerate(lines):
        first_seen.setdefault(line.split(b",", 1)[0], position)
    later_copies = [
        pos for pos, line in enumerate(lines) if first_seen[line.split(b",", 1)[0]] < pos
    ]
    assert len(later_copies) == sample.defects.duplicates
    assert all(
        lines[pos] == lines[first_seen[lines[pos].split(b",", 1)[0]]] for pos in later_copies
    )


def test_valid_timestamps_all_fall_inside_the_requested_day(
    events: duckdb.DuckDBPyConnection,
) -> None:
    days = events.execute(
        f"SELECT DISTINCT CAST({VALID_TIMESTAMP} AS DATE) FROM events "
        f"WHERE {VALID_TIMESTAMP} IS NOT NULL"
    ).fetchall()
    assert days == [(DAY,)]


def test_event_types_follow_the_documented_mix(events: duckdb.DuckDBPyConnection) -> None:
    shares = dict(
        events.execute(
            "SELECT event_type, count(*) / sum(count(*)) OVER () FROM events "
            f"WHERE event_type IN {tuple(EVENT_TYPES)} GROUP BY ALL"
        ).fetchall()
    )
    expected = {"page_view": 0.60, "add_to_cart": 0.20, "search": 0.15, "purchase": 0.05}
    assert shares == pytest.approx(expected, abs=0.015)


def test_products_and_prices_are_empty_exactly_for_searches(
    events: duckdb.DuckDBPyConnection,
) -> None:
    mismatched = scalar(
        events,
        "SELECT count(*) FROM events WHERE event_type IN ('page_view', 'add_to_cart', "
        "'search', 'purchase') AND ((event_type = 'search') <> (product_id IS NULL) "
        "OR (product_id IS NULL) <> (product_price IS NULL))",
    )
    assert mismatched == 0


def test_clean_prices_have_two_decimals_between_1_and_2000(
    events: duckdb.DuckDBPyConnection,
) -> None:
    bounds = events.execute(
        "SELECT min(CAST(product_price AS DECIMAL(9, 2))), max(CAST(product_price AS "
        "DECIMAL(9, 2))), bool_and(regexp_full_match(product_price, '-?[0-9]+\\.[0-9]{2}')) "
        "FROM events WHERE NOT starts_with(product_price, '-')"
    ).fetchone()
    assert bounds is not None
    low, high, two_decimals = bounds
    assert 1 <= low < high <= 2000
    assert two_decimals


def test_identifiers_have_their_documented_shapes_and_cardinalities(
    events: duckdb.DuckDBPyConnection,
) -> None:
    shapes = events.execute(
        "SELECT bool_and(regexp_full_match(event_id, 'e[0-9]{9}')), "
        "bool_and(regexp_full_match(user_id, 'u[0-9]{5}')), "
        "bool_and(regexp_full_match(product_id, 'p[0-9]{4}')), "
        "count(DISTINCT user_id), count(DISTINCT product_id), count(DISTINCT session_id) "
        "FROM events"
    ).fetchone()
    assert shapes is not None
    assert shapes[:3] == (True, True, True)
    users, products, sessions = shapes[3:]
    assert ROWS // 20 * 0.9 <= users <= ROWS // 20
    assert 500 <= products <= 1000
    assert users < sessions < ROWS


def test_about_five_percent_of_ip_addresses_are_ipv6(events: duckdb.DuckDBPyConnection) -> None:
    ipv6_share = scalar(events, "SELECT avg(CAST(contains(ip_address, ':') AS INT)) FROM events")
    assert 0.02 <= ipv6_share <= 0.09


def test_quoted_user_agents_with_commas_survive_parsing(events: duckdb.DuckDBPyConnection) -> None:
    with_comma = scalar(events, "SELECT count(*) FROM events WHERE contains(user_agent, ', ')")
    assert with_comma > ROWS // 10


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = generate_clickstream(tmp_path / "a", rows=5_000, seed=3)
    second = generate_clickstream(tmp_path / "b", rows=5_000, seed=3)
    assert first.defects == second.defects
    assert [p.read_bytes() for p in first.files] == [p.read_bytes() for p in second.files]
    assert first.products_file and second.products_file
    assert first.products_file.read_bytes() == second.products_file.read_bytes()


def test_a_different_seed_gives_different_files(tmp_path: Path) -> None:
    first = generate_clickstream(tmp_path / "a", rows=5_000, seed=3)
    second = generate_clickstream(tmp_path / "b", rows=5_000, seed=4)
    assert all(
        a.read_bytes() != b.read_bytes() for a, b in zip(first.files, second.files, strict=True)
    )


def test_chunk_size_never_changes_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = generate_clickstream(tmp_path / "whole", rows=5_000, files=2)
    monkeypatch.setattr(clickstream, "_CHUNK_ROWS", 333)
    chunked = generate_clickstream(tmp_path / "chunked", rows=5_000, files=2)
    assert [p.read_bytes() for p in whole.files] == [p.read_bytes() for p in chunked.files]


def test_gzip_files_decompress_to_the_same_content_and_are_reproducible(tmp_path: Path) -> None:
    plain = generate_clickstream(tmp_path / "plain", rows=5_000, products=False)
    zipped = generate_clickstream(tmp_path / "gz", rows=5_000, compression="gzip", products=False)
    again = generate_clickstream(tmp_path / "gz2", rows=5_000, compression="gzip", products=False)
    assert [p.name for p in zipped.files] == [f"events-{n:04d}.csv.gz" for n in range(4)]
    assert [gzip.decompress(p.read_bytes()) for p in zipped.files] == [
        p.read_bytes() for p in plain.files
    ]
    assert [p.read_bytes() for p in zipped.files] == [p.read_bytes() for p in again.files]


def test_a_new_generation_removes_the_event_files_of_an_earlier_one(tmp_path: Path) -> None:
    generate_clickstream(tmp_path, rows=1_000, files=6, compression="gzip")
    sample = generate_clickstream(tmp_path, rows=1_000, files=2)
    assert sorted((tmp_path / "events").iterdir()) == list(sample.files)


def test_without_broken_lines_every_line_parses(tmp_path: Path) -> None:
    sample = generate_clickstream(tmp_path, rows=5_000, with_broken_lines=False)
    con = duckdb.connect()
    load_events(con, sample.files)
    parsed = scalar(con, "SELECT count(*) FROM events")
    assert (sample.defects.malformed_lines, sample.defects.invalid_utf8_lines) == (0, 0)
    assert parsed == sample.rows == 5_000
    assert scalar(con, "SELECT count(*) FROM reject_errors") == 0


@pytest.mark.parametrize(("rows", "broken"), [(99, 0), (100, 1), (30_000, 30)])
def test_broken_lines_start_at_one_from_100_rows(tmp_path: Path, rows: int, broken: int) -> None:
    defects = generate_clickstream(tmp_path, rows=rows, files=1, products=False).defects
    assert (defects.malformed_lines, defects.invalid_utf8_lines) == (broken, broken)


@pytest.mark.parametrize("rows", [1, 6, 7, 15, 99])
def test_tiny_samples_at_the_highest_defect_rate_still_add_up(tmp_path: Path, rows: int) -> None:
    sample = generate_clickstream(tmp_path, rows=rows, files=2, defect_rate=0.1, products=False)
    lines = [line for path in sample.files for line in data_lines(path)]
    assert len(lines) == sample.rows == rows
    assert len({line.split(b",", 1)[0] for line in lines}) == rows - sample.defects.duplicates


def test_products_file_holds_1000_products_and_two_defective_lines(
    sample: GeneratedSample,
) -> None:
    assert sample.products_file is not None
    lines = sample.products_file.read_text(encoding="utf-8").splitlines()
    parsed, truncated = [], []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            truncated.append(line)
    negative = [product for product in parsed if product["list_price"] < 0]
    valid_ids = {p["product_id"] for p in parsed if p["list_price"] >= 1}
    assert len(lines) == 1_002
    assert (len(truncated), len(negative), sample.products_defects) == (1, 1, 2)
    assert valid_ids == {f"p{number:04d}" for number in range(1, 1_001)}


def test_event_prices_match_the_catalog_list_prices(
    sample: GeneratedSample, events: duckdb.DuckDBPyConnection
) -> None:
    mismatched = scalar(
        events,
        f"SELECT count(*) FROM events e JOIN read_json('{sample.products_file}', "
        "format = 'newline_delimited', ignore_errors = true) p USING (product_id) "
        "WHERE abs(CAST(e.product_price AS DECIMAL(9, 2))) <> CAST(p.list_price AS DECIMAL(9, 2))",
    )
    assert mismatched == 0


def test_manifest_records_the_counts_with_paths_relative_to_its_folder(
    sample: GeneratedSample,
) -> None:
    out_dir = sample.files[0].parent.parent
    write_manifest(sample, out_dir / "manifest.json")
    written = json.loads((out_dir / "manifest.json").read_text(encoding="utf-8"))
    assert written["rows"] == ROWS
    assert written["defects"]["duplicates"] == sample.defects.duplicates
    assert written["defects"]["invalid_utf8_lines"] == sample.defects.invalid_utf8_lines
    assert written["files"] == [f"events/events-{number:04d}.csv" for number in range(4)]
    assert (written["products_file"], written["products_defects"]) == (
        "products/products.ndjson",
        2,
    )


def test_manifest_keeps_absolute_paths_outside_its_folder(
    sample: GeneratedSample, tmp_path: Path
) -> None:
    write_manifest(sample, tmp_path / "manifest.json")
    written = json.loads((tmp_path / "manifest.json").read_text(encoding="utf-8"))
    assert written["files"] == [str(path) for path in sample.files]


@pytest.mark.parametrize(
    "arguments",
    [
        {"rows": 0},
        {"files": 0},
        {"defect_rate": -0.01},
        {"defect_rate": 0.5},
        {"compression": "xz"},
    ],
)
def test_invalid_arguments_are_refused_with_the_value(tmp_path: Path, arguments: dict) -> None:
    with pytest.raises(ValueError, match=str(next(iter(arguments.values())))):
        generate_clickstream(tmp_path, **arguments)


def test_a_million_rows_generate_in_under_a_minute(tmp_path: Path) -> None:
    started = time.perf_counter()
    sample = generate_clickstream(tmp_path, rows=1_000_000, with_broken_lines=False)
    elapsed = time.perf_counter() - started
    print(f"\ngenerated 1,000,000 clickstream rows in {elapsed:.2f} s")
    assert sample.rows == 1_000_000
    assert elapsed < 60
