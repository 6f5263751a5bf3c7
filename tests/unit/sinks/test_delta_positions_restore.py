"""Positions read back from a Delta table's history: the newest complete commit, a RESTORE
honoured, older unmarked commits merged, and only as much history read as that needs."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from sluiceway.core.storage import merge_positions
from sluiceway.sinks.delta import (
    COMPLETE_KEY,
    PIPELINE_KEY,
    POSITIONS_KEY,
    positions_from_history,
    read_positions,
)


def commit(
    version: int, files: list[str] | None = None, *, complete: bool = False, **extra: object
) -> dict[str, object]:
    entry: dict[str, object] = {"version": version, **extra}
    if files is not None:
        entry[PIPELINE_KEY] = extra.get(PIPELINE_KEY, "p")
        entry[POSITIONS_KEY] = json.dumps({"events": {"files": files}})
        if complete:
            entry[COMPLETE_KEY] = "true"
    return entry


def restore(version: int, to: int) -> dict[str, object]:
    return commit(version, operation="RESTORE", operationParameters={"version": str(to)})


def files_of(positions: dict[str, Any]) -> list[str]:
    return list(positions.get("events", {}).get("files", []))


def test_a_restore_undoes_the_positions_of_the_commits_it_removed() -> None:
    history = [commit(0, ["a.csv"]), commit(1, ["b.csv"]), commit(2, ["c.csv"]), restore(3, 1)]

    undone = positions_from_history(history, "p")
    without_restore = positions_from_history(history[:3], "p")

    assert undone != without_restore
    assert "c.csv" not in json.dumps(undone)
    assert "b.csv" in json.dumps(undone)


def test_the_newest_complete_commit_holds_the_positions_and_older_ones_are_not_merged() -> None:
    # A source dropped from the spec is gone from complete commits: it must not come back.
    history = [commit(0, ["old.csv"]), commit(1, ["a.csv"], complete=True)]

    assert files_of(positions_from_history(history, "p")) == ["a.csv"]


def test_unmarked_commits_after_a_complete_one_are_merged_into_it() -> None:
    history = [commit(0, ["a.csv"], complete=True), commit(1, ["b.csv"]), commit(2, ["c.csv"])]

    assert files_of(positions_from_history(history, "p")) == ["a.csv", "b.csv", "c.csv"]


def test_a_restore_to_before_the_newest_complete_commit_reads_the_one_it_restored() -> None:
    history = [
        commit(0, ["a.csv"], complete=True),
        commit(1, ["a.csv", "b.csv"], complete=True),
        restore(2, 0),
    ]

    assert files_of(positions_from_history(history, "p")) == ["a.csv"]


def test_a_restore_undone_by_a_later_restore_counts_for_nothing() -> None:
    history = [
        commit(0, ["a.csv"], complete=True),
        commit(1, ["a.csv", "b.csv"], complete=True),
        commit(2, ["a.csv", "b.csv", "c.csv"], complete=True),
        restore(3, 0),
        commit(4, ["a.csv", "d.csv"], complete=True),
        restore(5, 2),  # back to version 2: before the first restore
    ]

    assert files_of(positions_from_history(history, "p")) == ["a.csv", "b.csv", "c.csv"]


def test_commits_of_other_pipelines_are_skipped_on_the_way_down() -> None:
    history = [
        commit(0, ["a.csv"], complete=True),
        commit(1, ["z.csv"], complete=True, **{PIPELINE_KEY: "other"}),
    ]

    assert files_of(positions_from_history(history, "p")) == ["a.csv"]
    assert files_of(positions_from_history(history, "other")) == ["z.csv"]


def _reference(history: list[dict[str, Any]], pipeline: str) -> dict[str, Any]:
    """Every commit merged oldest first, a RESTORE going back to the state at its version."""
    positions: dict[str, Any] = {}
    after: dict[int, dict[str, Any]] = {}
    for entry in sorted(history, key=lambda c: int(c["version"])):
        version = int(entry["version"])
        if entry.get("operation") == "RESTORE":
            target = int(entry["operationParameters"]["version"])
            positions = after[max(v for v in after if v <= target)]
        elif entry.get(PIPELINE_KEY) == pipeline:
            positions = merge_positions(positions, json.loads(entry[POSITIONS_KEY]))
        after[version] = positions
    return positions


@pytest.mark.parametrize("seed", range(40))
def test_reading_from_the_newest_commit_equals_merging_the_whole_history(seed: int) -> None:
    # Histories as the sink writes them: older unmarked commits hold only their own files,
    # later ones the whole positions; other pipelines and restores in between.
    rng = random.Random(seed)
    history: list[dict[str, Any]] = [commit(0, ["f0"])]
    state: dict[int, list[str]] = {0: ["f0"]}
    marked = rng.randrange(1, 12)
    for version in range(1, 40):
        roll = rng.random()
        if roll < 0.15:
            target = rng.randrange(version)
            history.append(restore(version, target))
            state[version] = state[target]
        elif roll < 0.25:
            history.append(commit(version, ["x"], complete=True, **{PIPELINE_KEY: "other"}))
            state[version] = state[version - 1]
        else:
            new = f"f{version}"
            whole = sorted({*state[version - 1], new})
            complete = version >= marked
            history.append(commit(version, whole if complete else [new], complete=complete))
            state[version] = whole
    rng.shuffle(history)  # the reader must not rely on the order it is given

    assert positions_from_history(history, "p") == _reference(history, "p")
    assert files_of(positions_from_history(history, "p")) == state[39]


class _History:
    """A table's history as `DeltaTable.history(limit)` gives it: the newest `limit` commits."""

    def __init__(self, commits: list[dict[str, object]]) -> None:
        self.commits = sorted(commits, key=lambda c: int(str(c["version"])), reverse=True)
        self.asked: list[int | None] = []

    def history(self, limit: int | None = None) -> list[dict[str, object]]:
        self.asked.append(limit)
        return self.commits if limit is None else self.commits[:limit]


def test_a_restart_reads_only_the_newest_commits_when_the_newest_is_complete() -> None:
    table = _History([commit(v, [f"f{v}"], complete=True) for v in range(5000)])

    assert files_of(read_positions(table, "p")) == ["f4999"]  # type: ignore[arg-type]
    assert table.asked == [32]


def test_more_history_is_read_until_a_complete_commit_of_the_pipeline_is_in_it() -> None:
    ours = [commit(0, ["a.csv"], complete=True)]
    theirs = [commit(v, ["z"], complete=True, **{PIPELINE_KEY: "other"}) for v in range(1, 2000)]
    table = _History(ours + theirs)

    assert files_of(read_positions(table, "p")) == ["a.csv"]  # type: ignore[arg-type]
    assert table.asked == [32, 1024, None]


def test_a_short_history_without_a_complete_commit_is_read_once() -> None:
    table = _History([commit(0, ["a.csv"]), commit(1, ["b.csv"])])

    assert files_of(read_positions(table, "p")) == ["a.csv", "b.csv"]  # type: ignore[arg-type]
    assert table.asked == [32]


def test_a_cleaned_log_is_reported_only_when_no_commit_of_the_pipeline_is_left() -> None:
    calls: list[int] = []
    kept = _History([commit(40, ["f40"]), commit(41, ["f41"])])  # unmarked, older version
    gone = _History([commit(40, ["z"], **{PIPELINE_KEY: "other"})])

    found = read_positions(kept, "p", cleaned=calls.append)  # type: ignore[arg-type]
    missing = read_positions(gone, "p", cleaned=calls.append)  # type: ignore[arg-type]

    assert (files_of(found), missing) == (["f40", "f41"], {})
    assert calls == [40]
