"""One step of a batch run under its own `retries` policy and `timeout`.

A step that raises `TransientError` (Redis unreachable in `enrich_redis`, a Python step's
function raising `sluiceway.errors.TransientError`) runs again after the backoff of
`core/retry.py`, announced as a `retrying` event with the step's label. Before each retry
the temp tables and views the failed attempt created are dropped, so the retry starts from
the same input; the row accounting only counts the attempt that succeeds. Other errors fail
at once.

A step's `timeout` bounds each attempt: a DuckDB query still running when it passes is
interrupted and the step fails with a `StepError`. A step with a timeout has its lazy result
(the view of a row-preserving `sql` step) computed within the attempt, so the work it bounds
is the step's own. It is terminal on purpose: a step that
ran out of time on the same input will do so again; a slow service shows up as the
plug-in's own transient error (e.g. `enrich_redis`'s `timeout_s`). Python code running
inside a step is not interrupted: the step fails when it returns.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sluiceway.core.context import RunContext, StepOutput
from sluiceway.core.durations import parse_duration
from sluiceway.core.spec import StepConfig
from sluiceway.core.watchdog import Watchdog
from sluiceway.engines.duckdb import quote_ident
from sluiceway.errors import StepError, StepTimeout, TransientError


def apply_step(
    step: Any,
    config: StepConfig,
    ctx: RunContext,
    table: str,
    *,
    rows_in: int,
    label: str,
    sleep: Callable[[float], None] = time.sleep,
    run_deadline: float | None = None,
    rng: Callable[[], float] = random.random,
) -> tuple[StepOutput, int]:
    """Apply `step` to `table` with the step's retry policy and timeout.

    Args:
        step: the step plug-in (has `apply(ctx, table, rows_in=)`).
        config: its config (`retries`, `timeout`).
        rows_in: rows in `table`, handed to every attempt.
        label: where the step is in the spec, e.g. 'steps[1].enrich_redis'.
        sleep: waits between attempts.
        run_deadline: the run's deadline (time.monotonic()); no retry starts past it.
        rng: uniform [0, 1) numbers for the jitter.

    Returns:
        The step's output and the number of attempts it took.

    Raises:
        TransientError: the last attempt failed transiently (context: step, attempt).
        StepError: an attempt exceeded the step's timeout.
        SluicewayError: any other error of the step, at its first occurrence.
    """
    # Imported here: core.retry imports the runner, which imports this module.
    from sluiceway.core.retry import backoff_seconds

    policy = config.retries
    if policy is None:
        return _attempt(step, config, ctx, table, rows_in, label), 1
    attempts = policy.max_attempts
    for attempt in range(1, attempts + 1):
        before = _temp_names(ctx)
        try:
            return _attempt(step, config, ctx, table, rows_in, label), attempt
        except TransientError as exc:
            exc.with_context(step=label, attempt=f"{attempt}/{attempts}")
            if attempt == attempts:
                raise
            wait = backoff_seconds(policy, attempt, rng)
            if _is_past(run_deadline, wait):
                raise
            error = exc.message
        ctx.engine.drop(*(_temp_names(ctx) - before))
        ctx.events.emit(
            "retrying",
            attempt=attempt + 1,
            max_attempts=attempts,
            next_in_s=wait,
            error=error,
            step=label,
        )
        sleep(wait)
    raise AssertionError("unreachable: the last attempt returns or raises")


def _attempt(
    step: Any, config: StepConfig, ctx: RunContext, table: str, rows_in: int, label: str
) -> StepOutput:
    """One attempt under the step's timeout (interrupting the DuckDB connection)."""
    seconds = parse_duration(config.timeout).total_seconds() if config.timeout else None
    watchdog = Watchdog(
        time.monotonic() + seconds if seconds is not None else None, ctx.engine.con.interrupt
    )
    try:
        out = step.apply(ctx, table, rows_in=rows_in)
        if seconds is not None:
            out = _materialized(ctx, out)
    except Exception as exc:
        if watchdog.has_fired:
            raise _timed_out(label, config) from exc
        raise
    finally:
        watchdog.cancel()
    if watchdog.has_fired:
        ctx.engine.drop(out.table)
        raise _timed_out(label, config)
    return out


def _materialized(ctx: RunContext, out: StepOutput) -> StepOutput:
    """A step's lazy result (a view: a row-preserving `sql` step) computed into a table, so
    its work happens within the step's timeout instead of at a later stage."""
    engine = ctx.engine
    kind = engine.execute(
        "SELECT table_type FROM information_schema.tables WHERE table_name = ?",
        [out.table],
        purpose="find the step result",
    ).fetchall()
    if kind != [("VIEW",)]:
        return out
    name = engine.create_table(
        engine.new_name("step_result"), f"SELECT * FROM {quote_ident(out.table)}", purpose="step"
    )
    engine.drop(out.table)
    return replace(out, table=name)


def _timed_out(label: str, config: StepConfig) -> StepError:
    return StepTimeout(
        f"{label} exceeded its timeout {config.timeout} and was stopped; nothing was "
        "published. Raise the step's `timeout:` or make the step cheaper"
    )


def _is_past(deadline: float | None, wait: float) -> bool:
    return deadline is not None and time.monotonic() + wait >= deadline


def _temp_names(ctx: RunContext) -> set[str]:
    """The temp tables and views of the run's DuckDB connection, by name."""
    rows = ctx.engine.execute(
        "SELECT table_name FROM information_schema.tables", purpose="list temp tables"
    ).fetchall()
    return {str(name) for (name,) in rows}
