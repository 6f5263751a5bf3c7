"""A batch run's retry policy and timeout, around `run_pipeline`.

Only transient failures are retried (`RunResult.retryable`: a server that cannot be reached, a
busy store); a bad spec, bad data or a failed gate fails at once, since trying again changes
nothing. Each attempt is a run of its own in the run store; reruns are safe because every
sink is idempotent (the same inputs are skipped, partitions are replaced, merges converge).

Waits grow exponentially from `backoff`, capped at `max_backoff`, with ±25 % jitter, and
each is announced as a `retrying` event ("attempt 2/5, next in 8 s").

The timeout is a deadline for the whole run: a DuckDB query still running at the deadline is
interrupted, and a run past its deadline fails before it publishes; a commit already under
way finishes (Delta commits are atomic), so a timeout never leaves half a write.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import replace

from sluiceway.core.durations import parse_duration
from sluiceway.core.events import Event
from sluiceway.core.results import RunResult
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.spec import Pipeline
from sluiceway.core.spec_meta import RetryPolicy

JITTER = 0.25


def backoff_seconds(policy: RetryPolicy, attempt: int, rng: Callable[[], float]) -> float:
    """The wait after failed attempt number `attempt` (1-based)."""
    first = parse_duration(policy.backoff).total_seconds()
    cap = parse_duration(policy.max_backoff).total_seconds()
    wait = min(cap, first * 2 ** (attempt - 1))
    if policy.jitter:
        wait *= 1 + JITTER * (2 * rng() - 1)
    return round(wait, 3)


def run_with_policy(
    pipeline: Pipeline,
    options: RunOptions,
    *,
    run: Callable[[Pipeline, RunOptions], RunResult] = run_pipeline,
    sleep: Callable[[float], None] = time.sleep,
    rng: Callable[[], float] = random.random,
) -> RunResult:
    """Run `pipeline` with its `retries` policy and `timeout`; returns the last attempt.

    Args:
        run: runs one attempt (default `run_pipeline`).
        sleep: waits between attempts.
        rng: uniform [0, 1) numbers for the jitter.
    """
    policy = pipeline.retries
    attempts = policy.max_attempts if policy else 1
    timeout = parse_duration(pipeline.timeout).total_seconds() if pipeline.timeout else None
    for attempt in range(1, attempts + 1):
        deadline = time.monotonic() + timeout if timeout else None
        result = run(
            pipeline,
            replace(options, deadline=deadline, attempt=attempt, max_attempts=attempts),
        )
        result.attempt, result.max_attempts = attempt, attempts
        if result.ok or not result.retryable or attempt == attempts or policy is None:
            return result
        wait = backoff_seconds(policy, attempt, rng)
        _announce(options, result, attempt + 1, attempts, wait)
        sleep(wait)
    raise AssertionError("unreachable: the last attempt returns")


def _announce(
    options: RunOptions, failed: RunResult, attempt: int, attempts: int, wait: float
) -> None:
    event = Event(
        name="retrying",
        pipeline=failed.pipeline,
        run_id=failed.run_id,
        fields={
            "attempt": attempt,
            "max_attempts": attempts,
            "next_in_s": wait,
            "error": failed.error or "",
        },
    )
    for subscriber in options.subscribers:
        try:
            subscriber(event)
        except Exception:
            continue
