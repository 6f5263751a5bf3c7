"""Row accounting: rows_in = written + rejected + deduplicated + filtered, or the run fails."""

from __future__ import annotations

import pytest

from sluiceway.core.accounting import RowAccounting
from sluiceway.errors import AccountingError, TerminalError


def test_unbalanced_accounting_raises_with_every_term() -> None:
    accounting = RowAccounting(
        rows_in=100, rows_written=80, rows_rejected=7, rows_deduplicated=5, rows_filtered=3
    )

    with pytest.raises(AccountingError) as caught:
        accounting.verify()

    message = str(caught.value)
    for term in ("in=100", "written=80", "rejected=7", "deduplicated=5", "filtered=3", "= 95"):
        assert term in message
    assert isinstance(caught.value, TerminalError)


def test_more_rows_out_than_in_is_unbalanced_too() -> None:
    accounting = RowAccounting(rows_in=10, rows_written=10, rows_deduplicated=1)

    assert not accounting.is_balanced
    with pytest.raises(AccountingError, match="= 11"):
        accounting.verify()


def test_balanced_accounting_passes() -> None:
    accounting = RowAccounting(
        rows_in=100,
        rows_written=85,
        rows_rejected=7,
        rows_deduplicated=5,
        rows_filtered=3,
        rows_warned=12,
    )

    accounting.verify()

    assert accounting.is_balanced
    assert accounting.accounted == 100


def test_warned_rows_are_part_of_written_not_a_term_of_their_own() -> None:
    accounting = RowAccounting(rows_in=10, rows_written=10, rows_warned=4)

    assert accounting.is_balanced
    assert accounting.to_dict() == {
        "rows_in": 10,
        "rows_written": 10,
        "rows_rejected": 0,
        "rows_deduplicated": 0,
        "rows_filtered": 0,
        "rows_warned": 4,
    }
