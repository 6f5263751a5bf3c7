"""Positions read back from a Delta table's history honour a RESTORE."""

from __future__ import annotations

import json

from sluiceway.sinks.delta import PIPELINE_KEY, POSITIONS_KEY, positions_from_history


def commit(version: int, files: list[str] | None = None, **extra: object) -> dict[str, object]:
    entry: dict[str, object] = {"version": version, **extra}
    if files is not None:
        entry[PIPELINE_KEY] = "p"
        entry[POSITIONS_KEY] = json.dumps({"events": {"files": files}})
    return entry


def test_a_restore_undoes_the_positions_of_the_commits_it_removed() -> None:
    history = [
        commit(0, ["a.csv"]),
        commit(1, ["b.csv"]),
        commit(2, ["c.csv"]),
        commit(3, operation="RESTORE", operationParameters={"version": "1"}),
    ]

    undone = positions_from_history(history, "p")
    without_restore = positions_from_history(history[:3], "p")

    assert undone != without_restore
    assert "c.csv" not in json.dumps(undone)
    assert "b.csv" in json.dumps(undone)
