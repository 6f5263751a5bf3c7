"""postgres_cdc: which committed positions mean the initial snapshot landed whole."""

from __future__ import annotations

from typing import Any

import pytest

from sluiceway.streaming.postgres_cdc import (
    SNAPSHOT_END,
    PostgresCdcSource,
    PostgresCdcSourceConfig,
)

CONFIRMED = 0x1000  # the slot's confirmed_flush_lsn: no acknowledgement moved it
IN_SNAPSHOT = f"{CONFIRMED - 1:016X}"  # snapshot rows sit just before the consistent point


def cut_short(committed: str | None, monkeypatch: pytest.MonkeyPatch) -> bool:
    source = PostgresCdcSource(PostgresCdcSourceConfig(table="public.items"))
    monkeypatch.setattr(source, "_query", lambda sql, params=(), **_: [(CONFIRMED,)])
    source.resuming({"public.items": committed} if committed else {})
    return source._snapshot_cut_short()


@pytest.mark.parametrize(
    ("committed", "expected"),
    [
        (None, True),  # a slot with nothing committed from it
        (f"{IN_SNAPSHOT}:00000015", True),  # a batch inside the snapshot
        (f"{IN_SNAPSHOT}:{SNAPSHOT_END}", False),  # its last row
        (f"{IN_SNAPSHOT}:99999999", False),  # its last row, marked by an earlier version
        (f"{CONFIRMED + 64:016X}:00000000", False),  # a change after it
    ],
)
def test_a_snapshot_is_whole_when_its_end_mark_is_committed(
    committed: str | None, expected: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cut_short(committed, monkeypatch) is expected


def test_without_being_told_the_positions_nothing_is_judged(monkeypatch: Any) -> None:
    source = PostgresCdcSource(PostgresCdcSourceConfig(table="public.items"))
    assert source._snapshot_cut_short() is False
