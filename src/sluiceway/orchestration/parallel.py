"""Run a dependency graph of pipelines with at most N at once, in threads.

A pipeline starts once every dependency it has in the run succeeded (a dependency outside
the run counts as met). A failed pipeline marks everything downstream of it
`skipped (upstream X failed)`; independent branches carry on. Each run opens its own DuckDB
connection and run-store connections, so runs in threads share no engine state.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Literal

from sluiceway.core.results import RunResult
from sluiceway.errors import SluicewayError

OutcomeStatus = Literal["succeeded", "failed", "skipped"]


@dataclass
class Outcome:
    """What happened to one pipeline of a multi-pipeline run.

    Attributes:
        name: the pipeline.
        status: succeeded, failed, or skipped (never started).
        result: the run's result (None when skipped or when it could not start).
        reason: the error of a failed run, or why it was skipped.
        started / finished: time.monotonic() around the run (None when skipped).
    """

    name: str
    status: OutcomeStatus
    result: RunResult | None = None
    reason: str | None = None
    started: float | None = None
    finished: float | None = None


RunOne = Callable[[str], RunResult]
STOPPED = "stopped before it started (a stop request came); run it again"


def run_graph(
    depends_on: Mapping[str, Iterable[str]],
    names: Iterable[str],
    run_one: RunOne,
    *,
    workers: int,
    on_outcome: Callable[[Outcome], None] | None = None,
    stop: threading.Event | None = None,
) -> dict[str, Outcome]:
    """Run `names` in dependency order, independent ones in parallel.

    Args:
        depends_on: every pipeline's dependencies (the whole graph; must be acyclic).
        names: the pipelines to run.
        run_one: runs one pipeline by name and returns its result; a SluicewayError it
            raises (e.g. a missing key) fails that pipeline only.
        workers: how many pipelines run at once (at least 1).
        on_outcome: called in the calling thread as each pipeline finishes or is skipped.
        stop: once set (a stop request), no pipeline starts: the running ones finish and the
            others are skipped, "stopped before it started".

    Returns:
        Every pipeline of `names` → its outcome.
    """
    selected = set(names)
    pending = {n: {d for d in depends_on.get(n, ()) if d in selected} for n in selected}
    outcomes: dict[str, Outcome] = {}

    def settle(outcome: Outcome) -> None:
        outcomes[outcome.name] = outcome
        if on_outcome is not None:
            on_outcome(outcome)

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="sluice-run") as pool:
        running: dict[Future[Outcome], str] = {}
        while pending or running:
            if stop is not None and stop.is_set():
                for name in sorted(pending):
                    settle(Outcome(name, "skipped", reason=STOPPED))
                pending.clear()
            for name in _blocked(pending, outcomes):
                upstream = next(d for d in sorted(pending[name]) if d in outcomes)
                del pending[name]
                settle(Outcome(name, "skipped", reason=_skip_reason(upstream, outcomes)))
            # At most `workers` submitted: one queued in the pool would still start after a
            # stop request.
            ready = sorted(n for n, deps in pending.items() if not deps)
            for name in ready[: max(0, max(1, workers) - len(running))]:
                del pending[name]
                running[pool.submit(_attempt, name, run_one)] = name
            if not running:
                if pending and not _blocked(pending, outcomes):
                    raise ValueError(f"dependency cycle among {sorted(pending)}")
                continue
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                del running[future]
                outcome = future.result()
                settle(outcome)
                for deps in pending.values():
                    if outcome.status == "succeeded":
                        deps.discard(outcome.name)
    return outcomes


def _blocked(pending: Mapping[str, set[str]], outcomes: Mapping[str, Outcome]) -> list[str]:
    """Pending pipelines with a dependency that failed or was skipped."""
    return sorted(
        name
        for name, deps in pending.items()
        if any(d in outcomes and outcomes[d].status != "succeeded" for d in deps)
    )


def _skip_reason(upstream: str, outcomes: Mapping[str, Outcome]) -> str:
    status = outcomes[upstream].status
    return f"upstream {upstream} {'failed' if status == 'failed' else 'skipped'}"


def _attempt(name: str, run_one: RunOne) -> Outcome:
    started = time.monotonic()
    try:
        result = run_one(name)
    except SluicewayError as exc:
        return Outcome(name, "failed", reason=str(exc), started=started, finished=time.monotonic())
    except Exception as exc:  # one pipeline's crash must not stop the independent branches
        reason = f"unexpected {type(exc).__name__}: {exc} (please report it)"
        return Outcome(name, "failed", reason=reason, started=started, finished=time.monotonic())
    status: OutcomeStatus = "succeeded" if result.ok else "failed"
    return Outcome(name, status, result, result.error, started, time.monotonic())
