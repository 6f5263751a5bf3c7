"""The whole exception tree of sluiceway.

::

    SluicewayError                    every error sluiceway raises
    ├── SpecError                     the spec is invalid; carries every problem at once
    ├── ConfigError                   the environment is missing a key, a variable, a file
    ├── TransientError                worth retrying: a network blip, a lock, a busy server
    └── TerminalError                 retrying will not help: the run fails with context
        ├── SourceError               a source cannot be read (missing file, wrong format)
        ├── StepError                 a step failed (bad SQL, a Python step raised)
        ├── GateFailed                an `error` table check failed: nothing was published
        ├── AccountingError           rows_in != written + rejected + deduplicated + filtered
        └── SinkError                 a sink refused the write

Row-level failures are never exceptions: they are dead-letter rows with reasons.
Every error carries structured context (pipeline, run, step, source, position) so the
runner, the logs and the run store can say where it happened.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SluicewayError(Exception):
    """Base of every sluiceway error.

    Args:
        message: what went wrong, where, with the value, and what to do.
        context: structured facts (pipeline, run_id, step, source, file, position).
    """

    def __init__(self, message: str, *, context: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.context: dict[str, Any] = dict(context or {})

    def with_context(self, **context: Any) -> SluicewayError:
        """Add context keys that are not set yet and return self (for re-raising)."""
        for key, value in context.items():
            self.context.setdefault(key, value)
        return self

    def __str__(self) -> str:
        if not self.context:
            return self.message
        where = ", ".join(f"{k}={v}" for k, v in self.context.items() if v is not None)
        return f"{self.message} [{where}]" if where else self.message


@dataclass(frozen=True)
class SpecProblem:
    """One problem of a spec: where it is and what to do about it."""

    path: str
    message: str
    line: int | None = None
    file: str | None = None

    def __str__(self) -> str:
        where = self.path or "<spec>"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class SpecError(SluicewayError):
    """The spec is invalid. `problems` holds every problem found in one pass."""

    def __init__(self, problems: list[SpecProblem], *, source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        head = f"{len(problems)} problem(s) in {source or 'the spec'}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


class ConfigError(SluicewayError):
    """The environment lacks something the spec needs (a key, a variable, a credential)."""


class TransientError(SluicewayError):
    """A failure worth retrying with backoff."""


class ConcurrentRunError(TransientError):
    """Another run of the pipeline committed new source positions while this one ran: this
    run read from the older ones and publishes nothing. A retry reads from the new ones."""


class StorageUnavailable(TransientError):
    """An object store or file server could not be reached (refused, timed out, name not
    resolved): a later attempt may succeed."""


class TerminalError(SluicewayError):
    """A failure that retrying will not fix: the run fails."""


class SourceError(TerminalError):
    """A source cannot be read: missing path, wrong or mismatched format."""


class StepError(TerminalError):
    """A step failed: invalid SQL, a Python step raised or returned the wrong thing."""


class StepTimeout(StepError):
    """A step ran past its `timeout` and was interrupted."""


class SinkError(TerminalError):
    """A sink refused the write."""


class AccountingError(TerminalError):
    """The run's row accounting does not add up: some rows are unaccounted for."""


class GateFailed(TerminalError):
    """An `error` table check failed on the staged data; nothing was published.

    Args:
        failed: names of the checks that failed.
    """

    def __init__(
        self, message: str, *, failed: list[str], context: Mapping[str, Any] | None = None
    ):
        super().__init__(message, context=context)
        self.failed = failed
