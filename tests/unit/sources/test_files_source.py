"""The `files` source: which files a path names, how they combine, and incremental reads."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from sluiceway.core import registry
from sluiceway.errors import SourceError
from sluiceway.sources.files import FilesSource, FilesSourceConfig


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(path)


@pytest.fixture
def landing(tmp_path: Path) -> Path:
    """A landing folder with two data files, a nested one, and files a reader must skip."""
    folder = tmp_path / "landing"
    write(folder / "a.csv", "id,name\n1,alice\n")
    write(folder / "b.csv", "id,name\n2,bob\n")
    write(folder / "2024" / "c.csv", "id,name\n3,carol\n")
    write(folder / ".hidden.csv", "id,name\n98,hidden\n")
    write(folder / "_SUCCESS", "")
    write(folder / "_temporary" / "d.csv", "id,name\n99,partial\n")
    write(folder / ".git" / "e.csv", "id,name\n97,git\n")
    return folder


# Path forms


def test_a_single_file_path_reads_that_file(landing, read_files, fetch_rows):
    read = read_files(str(landing / "a.csv"))

    assert [(r["id"], r["name"]) for r in fetch_rows(read.table)] == [("1", "alice")]
    assert read.position == {"files": [str(landing / "a.csv")]}


def test_a_folder_is_read_recursively_skipping_dot_and_underscore_entries(
    landing, read_files, fetch_rows
):
    read = read_files(str(landing))

    assert [r["id"] for r in fetch_rows(read.table)] == ["3", "1", "2"]
    assert read.position == {
        "files": [str(landing / "2024" / "c.csv"), str(landing / "a.csv"), str(landing / "b.csv")]
    }
    assert read.rows_in == 3


def test_a_folder_named_explicitly_is_read_even_when_it_starts_with_an_underscore(
    landing, read_files, fetch_rows
):
    read = read_files(str(landing / "_temporary"))

    assert [r["id"] for r in fetch_rows(read.table)] == ["99"]


def test_a_glob_reads_only_the_files_it_matches(landing, read_files, fetch_rows):
    read = read_files(str(landing / "*.csv"))

    assert sorted(r["id"] for r in fetch_rows(read.table)) == ["1", "2"]


def test_a_recursive_glob_reaches_nested_folders(landing, read_files, fetch_rows):
    read = read_files(str(landing / "**" / "c.csv"))

    assert [r["id"] for r in fetch_rows(read.table)] == ["3"]


def test_a_list_of_paths_reads_each_file_once(landing, read_files, fetch_rows):
    read = read_files([str(landing / "b.csv"), str(landing / "a.csv"), str(landing / "*.csv")])

    assert sorted(r["id"] for r in fetch_rows(read.table)) == ["1", "2"]
    assert read.position == {"files": [str(landing / "a.csv"), str(landing / "b.csv")]}


def test_a_relative_path_resolves_against_the_spec_folder(landing, read_files, fetch_rows):
    read = read_files("landing/a.csv")

    assert [r["__sw_file"] for r in fetch_rows(read.table)] == [str(landing / "a.csv")]


@pytest.mark.parametrize("pattern", ["missing.csv", "landing/*.parquet", "markers"])
def test_a_path_matching_nothing_is_an_error_naming_the_path(
    tmp_path, landing, read_files, pattern
):
    write(tmp_path / "markers" / "_SUCCESS", "")
    write(tmp_path / "markers" / ".keep", "")

    with pytest.raises(SourceError) as caught:
        read_files(pattern)

    assert f"no file matches '{pattern}'" in str(caught.value)


def test_one_unmatched_path_in_a_list_fails_the_read(landing, read_files):
    with pytest.raises(SourceError, match=r"no file matches 'nope/\*\.csv'"):
        read_files([str(landing / "a.csv"), "nope/*.csv"])


# Combining files


def test_files_with_different_columns_are_unioned_by_name(tmp_path, read_files, engine, fetch_rows):
    write(tmp_path / "in" / "1.csv", "id,name\n1,alice\n")
    write(tmp_path / "in" / "2.csv", "email,id\nbob@example.com,2\n")
    write(tmp_path / "in" / "3.ndjson", '{"id": "3", "name": "carol", "vip": true}\n')

    read = read_files(str(tmp_path / "in"))

    assert {name for name, _ in engine.columns(read.table)} == {
        "id",
        "name",
        "email",
        "vip",
        "__sw_file",
        "__sw_row",
    }
    assert [(r["id"], r["name"], r["email"], r["vip"]) for r in fetch_rows(read.table)] == [
        ("1", "alice", None, None),
        ("2", None, "bob@example.com", None),
        ("3", "carol", None, "true"),
    ]
    assert read.rows_in == 3


def test_each_row_remembers_its_file_and_its_row_within_it(tmp_path, read_files, fetch_rows):
    first = write(tmp_path / "in" / "1.csv", "id\n1\n2\n")
    second = write(tmp_path / "in" / "2.csv", "id\n3\n")

    read = read_files(str(tmp_path / "in"))

    assert [(r["id"], r["__sw_file"], r["__sw_row"]) for r in fetch_rows(read.table)] == [
        ("1", first, 1),
        ("2", first, 2),
        ("3", second, 1),
    ]


def test_csv_files_sharing_a_header_keep_their_own_lines_rows_and_raw_bytes(
    tmp_path, read_files, fetch_rows
):
    first = write(tmp_path / "in" / "1.csv", "id,name\n1,a\n2\n3,c\n")
    second = write(tmp_path / "in" / "2.csv", "id,name\n4,d,extra\n5,e\n")

    read = read_files(str(tmp_path / "in"))

    assert [(r["file"], r["line"], r["raw"]) for r in read.parse_rejects.to_pylist()] == [
        (first, 3, b"2"),
        (second, 2, b"4,d,extra"),
    ]
    assert [(r["id"], r["__sw_file"], r["__sw_row"]) for r in fetch_rows(read.table)] == [
        ("1", first, 1),
        ("3", first, 2),
        ("5", second, 1),
    ]
    assert read.rows_in == 5


def test_rejects_of_every_file_are_collected_with_their_file(tmp_path, read_files):
    first = write(tmp_path / "in" / "1.csv", "id,name\n1\n")
    second = write(tmp_path / "in" / "2.ndjson", '{"id": 2\n')

    read = read_files(str(tmp_path / "in"))

    assert [(r["file"], r["line"]) for r in read.parse_rejects.to_pylist()] == [
        (first, 2),
        (second, 1),
    ]
    assert read.rows_in == 2


# Incremental reads


def test_incremental_read_skips_files_a_committed_position_lists(
    landing, read_files, engine, fetch_rows
):
    first = read_files(str(landing / "*.csv"), incremental=True)
    second = read_files(str(landing / "*.csv"), incremental=True, position=first.position)

    assert sorted(r["id"] for r in fetch_rows(first.table)) == ["1", "2"]
    assert (engine.count(second.table), second.rows_in) == (0, 0)
    assert second.position == first.position
    assert first.position["files"] == [str(landing / "a.csv"), str(landing / "b.csv")]
    assert sorted(first.position["stamps"]) == first.position["files"]
    assert [name for name, _ in engine.columns(second.table)] == ["__sw_file", "__sw_row"]


def test_incremental_read_picks_up_only_a_new_file_and_the_position_lists_all(
    landing, read_files, fetch_rows
):
    first = read_files(str(landing / "*.csv"), incremental=True)
    new = write(landing / "n.csv", "id,name\n4,dan\n")

    second = read_files(str(landing / "*.csv"), incremental=True, position=first.position)

    assert [(r["id"], r["__sw_file"]) for r in fetch_rows(second.table)] == [("4", new)]
    assert second.rows_in == 1
    assert second.position["files"] == [str(landing / "a.csv"), str(landing / "b.csv"), new]


def test_incremental_position_keeps_files_that_no_longer_match(landing, read_files):
    position = {"files": [str(landing / "archived.csv"), str(landing / "a.csv")]}

    read = read_files(str(landing / "*.csv"), incremental=True, position=position)

    assert read.position["files"] == [
        str(landing / "a.csv"),
        str(landing / "archived.csv"),
        str(landing / "b.csv"),
    ]
    assert read.rows_in == 1


def test_a_non_incremental_read_reads_every_file_every_time(landing, read_files, fetch_rows):
    first = read_files(str(landing / "*.csv"))
    second = read_files(str(landing / "*.csv"), position=first.position)

    assert sorted(r["id"] for r in fetch_rows(second.table)) == ["1", "2"]
    assert second.position == first.position


# Fingerprint


def test_the_fingerprint_is_stable_while_the_files_are_unchanged(landing, read_files):
    first = read_files(str(landing / "*.csv"))
    second = read_files(str(landing / "*.csv"))

    assert first.fingerprint == second.fingerprint
    assert len(first.fingerprint) == 20


def test_the_fingerprint_changes_when_a_file_grows(landing, read_files):
    before = read_files(str(landing / "*.csv")).fingerprint
    write(landing / "a.csv", "id,name\n1,alice\n5,eve\n")

    assert read_files(str(landing / "*.csv")).fingerprint != before


def test_the_fingerprint_changes_when_a_file_is_rewritten_with_the_same_size(landing, read_files):
    path = landing / "a.csv"
    before = read_files(str(path)).fingerprint
    stat = path.stat()
    write(path, "id,name\n1,ALICE\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))

    assert path.stat().st_size == stat.st_size
    assert read_files(str(path)).fingerprint != before


def test_the_fingerprint_changes_when_a_file_is_added(landing, read_files):
    before = read_files(str(landing / "*.csv")).fingerprint
    write(landing / "n.csv", "id,name\n4,dan\n")

    assert read_files(str(landing / "*.csv")).fingerprint != before


# Config


def test_the_files_source_is_registered_under_its_type():
    plugin = registry.lookup("source", "files")

    assert plugin is not None
    assert (plugin.config, plugin.impl) == (FilesSourceConfig, FilesSource)


@pytest.mark.parametrize(
    "options",
    [
        {"delimiter": ";;"},
        {"delimiter": ""},
        {"format": "xml"},
        {"compression": "bz2"},
        {"paths": "x"},
    ],
    ids=["long-delimiter", "empty-delimiter", "format", "compression", "unknown-key"],
)
def test_invalid_config_is_refused(options):
    with pytest.raises(ValidationError):
        FilesSourceConfig(path="x.csv", **options)
