"""Each format of the `files` source: what lands in the table and what becomes a parse reject."""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.errors import SourceError
from sluiceway.sources import file_formats as ff

META = [("__sw_file", "VARCHAR"), ("__sw_row", "BIGINT")]
AVRO_SCHEMA = {
    "type": "record",
    "name": "order",
    "fields": [
        {"name": "order_id", "type": "long"},
        {"name": "amount", "type": "double"},
        {"name": "paid", "type": "boolean"},
        {"name": "note", "type": ["null", "string"]},
    ],
}
AVRO_ROWS = [
    {"order_id": 1, "amount": 9.5, "paid": True, "note": "first"},
    {"order_id": 2, "amount": 0.25, "paid": False, "note": None},
]


def write(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return str(path)


def avro_bytes(rows: list[dict[str, Any]]) -> bytes:
    buffer = io.BytesIO()
    fastavro.writer(buffer, AVRO_SCHEMA, rows)
    return buffer.getvalue()


def rejects(read: Any) -> list[dict[str, Any]]:
    return read.parse_rejects.to_pylist()


# CSV


def test_csv_rows_arrive_as_text_with_their_file_and_row_number(
    tmp_path, read_files, engine, fetch_rows
):
    path = write(tmp_path / "orders.csv", b"id,name,amount\n1,alice,9.50\n2,bob,3\n3,carol,\n")

    read = read_files(path)

    assert engine.columns(read.table) == [
        ("id", "VARCHAR"),
        ("name", "VARCHAR"),
        ("amount", "VARCHAR"),
        *META,
    ]
    assert fetch_rows(read.table) == [
        {"id": "1", "name": "alice", "amount": "9.50", "__sw_file": path, "__sw_row": 1},
        {"id": "2", "name": "bob", "amount": "3", "__sw_file": path, "__sw_row": 2},
        {"id": "3", "name": "carol", "amount": None, "__sw_file": path, "__sw_row": 3},
    ]
    assert (read.rows_in, read.typed, rejects(read)) == (3, False, [])


def test_csv_quoted_fields_keep_their_commas_and_escaped_quotes(tmp_path, read_files, fetch_rows):
    path = write(tmp_path / "people.csv", b'id,name,quote\n1,"Smith, John","he said ""hi"""\n')

    read = read_files(path)

    (row,) = fetch_rows(read.table)
    assert (row["name"], row["quote"]) == ("Smith, John", 'he said "hi"')


def test_csv_lines_with_too_few_or_too_many_fields_become_rejects_with_line_and_raw_bytes(
    tmp_path, read_files, fetch_rows
):
    path = write(
        tmp_path / "orders.csv", b"id,name,amount\n1,alice,9.5\n2,bob\n3,carol,1,extra\n4,dan,7\n"
    )

    read = read_files(path)

    assert [(r["id"], r["name"]) for r in fetch_rows(read.table)] == [("1", "alice"), ("4", "dan")]
    found = rejects(read)
    assert [(r["file"], r["line"], r["raw"]) for r in found] == [
        (path, 3, b"2,bob"),
        (path, 4, b"3,carol,1,extra"),
    ]
    assert (
        found[0]["reason"].startswith("malformed CSV line: ") and "Found: 2" in found[0]["reason"]
    )
    assert (
        found[1]["reason"].startswith("malformed CSV line: ") and "Found: 4" in found[1]["reason"]
    )
    assert read.rows_in == 2 + 2


def _numbered_csv(bad_line: str) -> bytes:
    rows = ["id,amount,note", *(f"{i},{i * 2},n{i}" for i in range(1, 101))]
    rows[50] = bad_line  # the file's line 51
    return ("\n".join(rows) + "\n").encode()


def test_a_stray_quote_that_defeats_the_sniffer_is_one_reject_not_a_failed_read(
    tmp_path, read_files, fetch_rows
):
    path = write(tmp_path / "orders.csv", _numbered_csv('50,20,"x"y"'))

    read = read_files(path)

    assert len(fetch_rows(read.table)) == 99
    [found] = rejects(read)
    assert (found["line"], found["raw"]) == (51, b'50,20,"x"y"')


@pytest.mark.parametrize("rows", [100, 100_000])
def test_a_quote_that_never_closes_stops_the_read_naming_the_line(tmp_path, read_files, rows):
    # The reader takes the rest of the file as one value (and keeps only 10,000 bytes of
    # it): those rows cannot be told apart, so nothing is read rather than rows lost.
    lines = ["id,amount,note", *(f"{i},{i * 2},n{i}" for i in range(1, rows + 1))]
    lines[50] = '50,"20,unterminated'
    path = write(tmp_path / "orders.csv", ("\n".join(lines) + "\n").encode())

    with pytest.raises(SourceError, match="line 51 opens a quote that never closes"):
        read_files(path)


def test_a_stray_quote_in_a_later_file_of_a_batch_is_one_reject(tmp_path, read_files, fetch_rows):
    # The files share their header, so they are read by one scan; the sniffer fails on
    # the second one, and the scan is redone with the first file's columns.
    write(tmp_path / "in" / "a.csv", _numbered_csv("50,100,n50"))
    write(tmp_path / "in" / "b.csv", _numbered_csv('50,20,"x"y"'))

    read = read_files(str(tmp_path / "in") + "/")

    assert len(fetch_rows(read.table)) == 199
    [found] = rejects(read)
    assert (Path(found["file"]).name, found["line"]) == ("b.csv", 51)


def test_a_stray_quote_in_a_file_without_header_is_one_reject(tmp_path, read_files, fetch_rows):
    data = _numbered_csv('50,20,"x"y"').split(b"\n", 1)[1]  # no header line
    path = write(tmp_path / "orders.csv", data)

    read = read_files(path, header=False)

    rows = fetch_rows(read.table)
    assert len(rows) == 99 and rows[0]["column0"] == "1"
    assert [r["line"] for r in rejects(read)] == [50]


def test_csv_reject_raw_bytes_are_exact_with_crlf_line_endings(tmp_path, read_files):
    path = write(tmp_path / "orders.csv", b"id,name\r\n1,alice\r\n2\r\n3,carol\r\n")

    read = read_files(path)

    assert [(r["line"], r["raw"]) for r in rejects(read)] == [(3, b"2")]
    assert read.rows_in == 3


@pytest.mark.parametrize("compressed", [False, True])
def test_a_csv_with_both_crlf_and_lf_line_endings_is_read_with_its_bad_lines_as_rejects(
    tmp_path, read_files, fetch_rows, compressed
):
    data = b"id,name\r\n1,alice\r\nshort\n2,bob\n3,carol,extra\r\n4,dan\n"
    name = "orders.csv.gz" if compressed else "orders.csv"
    path = write(tmp_path / name, gzip.compress(data) if compressed else data)

    read = read_files(path)

    assert [(r["id"], r["name"]) for r in fetch_rows(read.table)] == [
        ("1", "alice"),
        ("2", "bob"),
        ("4", "dan"),
    ]
    assert [(r["file"], r["line"], r["raw"]) for r in rejects(read)] == [
        (path, 3, b"short"),
        (path, 5, b"3,carol,extra"),
    ]


def test_a_quoted_crlf_in_a_file_with_mixed_line_endings_stays_in_its_value(
    tmp_path, read_files, fetch_rows
):
    path = write(tmp_path / "notes.csv", b'id,note\n1,"two\r\nlines"\n2,plain\r\n3,x\n')

    read = read_files(path)

    assert [(r["id"], r["note"]) for r in fetch_rows(read.table)] == [
        ("1", "two\r\nlines"),
        ("2", "plain"),
        ("3", "x"),
    ]


def test_a_mixed_ending_file_whose_quotes_cannot_be_followed_is_still_read(
    tmp_path, read_files, fetch_rows
):
    path = write(tmp_path / "tv.csv", b'id,note\n1,5" screen\n2,plain\r\n3,x\n4,y\r\n5,z\n')

    read = read_files(path)

    assert [r["id"] for r in fetch_rows(read.table)] == ["1", "2", "3", "4", "5"]


def test_csv_line_with_invalid_utf8_becomes_a_reject_holding_the_original_bytes(
    tmp_path, read_files, fetch_rows
):
    path = write(tmp_path / "names.csv", b"id,name\n1,al\xff\xfeice\n2,bob\n")

    read = read_files(path)

    assert [r["name"] for r in fetch_rows(read.table)] == ["bob"]
    (reject,) = rejects(read)
    assert (reject["line"], reject["raw"]) == (2, b"1,al\xff\xfeice")
    assert "utf-8" in reject["reason"].lower()
    assert read.rows_in == 2


def test_csv_delimiter_and_header_options_are_honoured(tmp_path, read_files, fetch_rows):
    path = write(tmp_path / "orders.txt", b"1;alice\n2;bob\n")

    read = read_files(path, delimiter=";", header=False)

    assert [(r["column0"], r["column1"]) for r in fetch_rows(read.table)] == [
        ("1", "alice"),
        ("2", "bob"),
    ]


# NDJSON


def test_ndjson_object_keys_become_text_columns_and_nested_values_stay_json(
    tmp_path, read_files, engine, fetch_rows
):
    path = write(
        tmp_path / "events.ndjson",
        b'{"id": 1, "user": {"name": "ann", "tags": ["a"]}, "ok": true}\n{"id": 2, "extra": "x"}\n',
    )

    read = read_files(path)

    assert engine.columns(read.table) == [
        ("extra", "VARCHAR"),
        ("id", "VARCHAR"),
        ("ok", "VARCHAR"),
        ("user", "VARCHAR"),
        *META,
    ]
    assert fetch_rows(read.table) == [
        {
            "extra": None,
            "id": "1",
            "ok": "true",
            "user": '{"name":"ann","tags":["a"]}',
            "__sw_file": path,
            "__sw_row": 1,
        },
        {"extra": "x", "id": "2", "ok": None, "user": None, "__sw_file": path, "__sw_row": 2},
    ]
    assert (read.rows_in, read.typed) == (2, False)


def test_ndjson_bad_lines_are_rejected_with_their_line_numbers_and_blank_lines_ignored(
    tmp_path, read_files, fetch_rows
):
    path = write(tmp_path / "events.jsonl", b'{"id": 1}\n\n{"id": 2\n[1, 2]\n   \n{"id": 5}\n')

    read = read_files(path)

    assert [(r["id"], r["__sw_row"]) for r in fetch_rows(read.table)] == [("1", 1), ("5", 6)]
    assert rejects(read) == [
        {
            "file": path,
            "line": 3,
            "raw": b'{"id": 2',
            "reason": "malformed JSON (truncated or invalid)",
        },
        {"file": path, "line": 4, "raw": b"[1, 2]", "reason": "a JSON array, not an object"},
    ]
    assert read.rows_in == 2 + 2


def test_ndjson_lines_with_invalid_utf8_are_rejected_and_later_lines_keep_their_numbers(
    tmp_path, read_files, fetch_rows
):
    path = write(
        tmp_path / "events.ndjson",
        b'{"id": 1}\n{"id": "\xff\xfe"}\n{"id": "\xfe"}\n{"id": 4}\n{"id": 5\n',
    )

    read = read_files(path)

    assert [(r["id"], r["__sw_row"]) for r in fetch_rows(read.table)] == [("1", 1), ("4", 4)]
    assert [(r["line"], r["raw"]) for r in rejects(read)] == [
        (2, b'{"id": "\xff\xfe"}'),
        (3, b'{"id": "\xfe"}'),
        (5, b'{"id": 5'),
    ]
    assert rejects(read)[0]["reason"].startswith("unreadable line: ")
    assert read.rows_in == 5


def test_ndjson_keys_differing_only_in_case_are_one_column(tmp_path, read_files, fetch_rows):
    path = write(
        tmp_path / "people.ndjson",
        b'{"id": "1", "email": "a@x.org"}\n{"id": "2", "Email": "b@x.org", "": 1}\n',
    )

    read = read_files(path)

    rows = fetch_rows(read.table)
    assert [sorted(k for k in r if not k.startswith("__sw_")) for r in rows] == [
        ["Email", "id"],
        ["Email", "id"],
    ]
    assert [r["Email"] for r in rows] == ["a@x.org", "b@x.org"]


def test_an_empty_ndjson_file_reads_no_rows(tmp_path, read_files, engine):
    path = write(tmp_path / "events.ndjson", b"")

    read = read_files(path)

    assert (engine.count(read.table), read.rows_in, rejects(read)) == (0, 0, [])


# JSON array


def test_json_array_file_objects_become_rows(tmp_path, read_files, fetch_rows):
    path = write(tmp_path / "orders.json", b'  [{"id": 1, "tags": [1, 2]}, {"id": 2, "note": "x"}]')

    read = read_files(path)

    assert fetch_rows(read.table) == [
        {"id": "1", "note": None, "tags": "[1,2]", "__sw_file": path, "__sw_row": 1},
        {"id": "2", "note": "x", "tags": None, "__sw_file": path, "__sw_row": 2},
    ]
    assert (read.rows_in, rejects(read)) == (2, [])


def test_json_array_elements_that_are_not_objects_are_rejected_by_position(
    tmp_path, read_files, fetch_rows
):
    path = write(tmp_path / "orders.json", b'[{"id": 1}, [3], {"id": 3}]')

    read = read_files(path)

    assert [r["id"] for r in fetch_rows(read.table)] == ["1", "3"]
    assert [(r["line"], r["raw"], r["reason"]) for r in rejects(read)] == [
        (2, b"[3]", "a JSON array, not an object")
    ]
    assert read.rows_in == 3


def test_an_invalid_json_array_file_is_one_reject_holding_the_whole_file(
    tmp_path, read_files, engine
):
    data = b'[{"id": 1}, {"id": 2'
    path = write(tmp_path / "orders.json", data)

    read = read_files(path)

    assert rejects(read) == [
        {"file": path, "line": 1, "raw": data, "reason": "not a valid JSON array of objects"}
    ]
    assert (engine.count(read.table), read.rows_in) == (0, 1)


def test_a_json_file_holding_objects_per_line_is_read_as_ndjson(tmp_path, read_files, fetch_rows):
    path = write(tmp_path / "orders.json", b'{"id": 1}\n{"id": 2}\n')

    read = read_files(path)

    assert [r["id"] for r in fetch_rows(read.table)] == ["1", "2"]


# Parquet and Avro


def test_parquet_keeps_its_types_and_values(tmp_path, read_files, engine, fetch_rows):
    path = str(tmp_path / "orders.parquet")
    stamp = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    pq.write_table(
        pa.table(
            {
                "order_id": pa.array([1, 2], pa.int64()),
                "amount": pa.array([9.5, None], pa.float64()),
                "paid": [True, False],
                "note": ["first", None],
                "at": pa.array([stamp, stamp], pa.timestamp("us", tz="UTC")),
            }
        ),
        path,
    )

    read = read_files(path)

    assert engine.columns(read.table) == [
        ("order_id", "BIGINT"),
        ("amount", "DOUBLE"),
        ("paid", "BOOLEAN"),
        ("note", "VARCHAR"),
        ("at", "TIMESTAMP WITH TIME ZONE"),
        *META,
    ]
    assert [
        (r["order_id"], r["amount"], r["paid"], r["note"], r["at"]) for r in fetch_rows(read.table)
    ] == [
        (1, 9.5, True, "first", stamp),
        (2, None, False, None, stamp),
    ]
    assert (read.typed, read.rows_in, rejects(read)) == (True, 2, [])


def test_avro_keeps_its_types_and_values(tmp_path, read_files, engine, fetch_rows):
    path = write(tmp_path / "orders.avro", avro_bytes(AVRO_ROWS))

    read = read_files(path)

    assert engine.columns(read.table) == [
        ("order_id", "BIGINT"),
        ("amount", "DOUBLE"),
        ("paid", "BOOLEAN"),
        ("note", "VARCHAR"),
        *META,
    ]
    assert [
        {k: v for k, v in r.items() if not k.startswith("__sw_")} for r in fetch_rows(read.table)
    ] == AVRO_ROWS
    assert [r["__sw_row"] for r in fetch_rows(read.table)] == [1, 2]
    assert (read.typed, read.rows_in, rejects(read)) == (True, 2, [])


@pytest.mark.parametrize(
    "damage",
    [lambda good: good[:40] + b"garbage" * 10, lambda good: good[:-5]],
    ids=["corrupt-header", "truncated-block"],
)
def test_a_corrupt_avro_file_is_one_reject_not_an_exception(tmp_path, read_files, engine, damage):
    data = damage(avro_bytes(AVRO_ROWS))
    path = write(tmp_path / "orders.avro", data)

    read = read_files(path)

    (reject,) = rejects(read)
    assert (reject["file"], reject["line"], reject["raw"]) == (path, None, data)
    assert reject["reason"].startswith("corrupt Avro file: ")
    assert (engine.count(read.table), read.rows_in) == (0, 1)


# Compression


PLAIN_CSV = b"id,name\n1,alice\n2\n3,carol\n"
COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    ".csv.gz": gzip.compress,
    ".csv.zst": zstandard.ZstdCompressor().compress,
}


@pytest.mark.parametrize("suffix", COMPRESSORS)
def test_compressed_csv_reads_the_same_rows_and_rejects_as_plain(
    tmp_path, read_files, fetch_rows, suffix
):
    plain = read_files(write(tmp_path / "plain" / "orders.csv", PLAIN_CSV))
    packed = read_files(
        write(tmp_path / "packed" / f"orders{suffix}", COMPRESSORS[suffix](PLAIN_CSV))
    )

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "__sw_file"} for r in rows]

    assert strip(fetch_rows(packed.table)) == strip(fetch_rows(plain.table))
    assert [r["id"] for r in fetch_rows(packed.table)] == ["1", "3"]
    assert [(r["line"], r["raw"]) for r in rejects(packed)] == [(3, b"2")]
    assert packed.rows_in == plain.rows_in == 3


def test_gzip_ndjson_is_sniffed_through_the_compression(tmp_path, read_files, fetch_rows):
    path = write(tmp_path / "events.ndjson.gz", gzip.compress(b'{"id": 1}\n{"id": 2}\n'))

    read = read_files(path)

    assert [r["id"] for r in fetch_rows(read.table)] == ["1", "2"]


# Format sniffing


@pytest.mark.parametrize(
    ("content", "looks_like", "fix"),
    [
        (b'{"id": 1}\n{"id": 2}\n', "looks like NDJSON", "set format: ndjson"),
        (b'[{"id": 1}]', "looks like JSON", "set format: json"),
    ],
    ids=["ndjson", "json-array"],
)
def test_a_csv_file_holding_json_is_an_error_saying_so_and_how_to_fix_it(
    tmp_path, read_files, content, looks_like, fix
):
    path = write(tmp_path / "orders.csv", content)

    with pytest.raises(SourceError) as caught:
        read_files(path)

    message = str(caught.value)
    assert path in message and "said to be CSV" in message
    assert looks_like in message and fix in message


@pytest.mark.parametrize("suffix", [".parquet", ".avro"])
def test_a_binary_format_file_holding_text_is_an_error(tmp_path, read_files, suffix):
    path = write(tmp_path / f"orders{suffix}", b"id,name\n1,alice\n")

    with pytest.raises(
        SourceError, match=r"is said to be (PARQUET|AVRO) but its content looks like CSV"
    ):
        read_files(path)


def test_a_declared_format_wins_over_an_unknown_extension(tmp_path, read_files, fetch_rows):
    path = write(tmp_path / "events.log", b'{"id": 1}\n')

    read = read_files(path, format="ndjson")

    assert [r["id"] for r in fetch_rows(read.table)] == ["1"]


def test_an_unknown_extension_is_sniffed_from_the_content(tmp_path, read_files, fetch_rows):
    pq.write_table(pa.table({"id": [7]}), tmp_path / "orders.bin")

    read = read_files(str(tmp_path / "orders.bin"))

    assert [r["id"] for r in fetch_rows(read.table)] == [7]
    assert read.typed is True


def test_an_empty_file_with_an_unknown_extension_asks_for_a_format(tmp_path, read_files):
    path = write(tmp_path / "orders.dat", b"")

    with pytest.raises(SourceError, match=r"cannot tell the format of .*set format: csv"):
        read_files(path)


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"PAR1\x15\x04", "parquet"),
        (b"Obj\x01\x04\x14", "avro"),
        (b"\xef\xbb\xbf\n  [{}]", "json"),
        (b'\r\n{"a": 1}', "ndjson"),
        (b"a,b\n1,2\n", "csv"),
        (b" \n\t", None),
    ],
)
def test_sniff_tells_the_format_from_the_first_bytes(head, expected):
    assert ff.sniff(head) == expected


@pytest.mark.parametrize(
    ("name", "declared", "expected"),
    [
        ("a.csv.gz", "auto", "gzip"),
        ("a.CSV.ZST", "auto", "zstd"),
        ("a.csv", "auto", "none"),
        ("a.csv", "gzip", "gzip"),
    ],
)
def test_compression_comes_from_the_declaration_else_the_extension(name, declared, expected):
    assert ff.compression_of(name, declared) == expected


def test_rejects_table_has_the_parse_reject_schema_even_when_empty():
    table = ff.rejects_table([])

    assert table.num_rows == 0
    assert table.schema.names == ["file", "line", "raw", "reason"]
    assert table.schema.field("raw").type == pa.binary()


def test_readers_hand_every_temp_table_to_the_runner_to_drop(tmp_path, read_files, engine):
    write(tmp_path / "in" / "a.csv", b"id\n1\n2,3\n")
    write(tmp_path / "in" / "b.ndjson", b'{"id": 2}\n{"id": "\xff"}\n')
    write(tmp_path / "in" / "c.json", b'[{"id": 3}]')
    write(tmp_path / "in" / "d.json", b"[{")
    write(tmp_path / "in" / "e.avro", avro_bytes(AVRO_ROWS)[:-5])
    before = _tables(engine)

    read = read_files(str(tmp_path / "in"))

    assert _tables(engine) - before == {read.table, *read.temp_tables}
    assert len(read.parse_rejects) == 4
    engine.drop(read.table, *read.temp_tables)
    assert _tables(engine) == before


def _tables(engine: DuckDBEngine) -> set[str]:
    query = "SELECT table_name FROM duckdb_tables() UNION ALL SELECT view_name FROM duckdb_views() WHERE NOT internal"
    return {row[0] for row in engine.execute(query).fetchall()}
