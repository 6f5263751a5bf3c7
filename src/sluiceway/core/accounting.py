"""Row accounting: every row that came in is written, rejected, deduplicated or filtered."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sluiceway.errors import AccountingError


@dataclass
class RowAccounting:
    """The terms of `rows_in = written + rejected + deduplicated + filtered`.

    `rows_warned` counts rows kept despite a contract rule under `on_violation: warn`;
    they are part of `rows_written`, not a term of their own.
    """

    rows_in: int = 0
    rows_written: int = 0
    rows_rejected: int = 0
    rows_deduplicated: int = 0
    rows_filtered: int = 0
    rows_warned: int = 0

    @property
    def accounted(self) -> int:
        """Rows that left the run one way or another."""
        return self.rows_written + self.rows_rejected + self.rows_deduplicated + self.rows_filtered

    @property
    def is_balanced(self) -> bool:
        """True when no row is unaccounted for."""
        return self.rows_in == self.accounted

    def verify(self) -> None:
        """Raise AccountingError, with every term, unless the terms add up."""
        if not self.is_balanced:
            raise AccountingError(
                f"row accounting does not add up: in={self.rows_in} but written={self.rows_written} + "
                f"rejected={self.rows_rejected} + deduplicated={self.rows_deduplicated} + "
                f"filtered={self.rows_filtered} = {self.accounted}; nothing was published. "
                "A step changed the row count without declaring it (see `rows:` on sql and python steps)."
            )

    def to_dict(self) -> dict[str, int]:
        """The terms as a plain dict."""
        return asdict(self)
