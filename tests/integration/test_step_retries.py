"""Per-step `retries` and `timeout`: a step that fails transiently runs again after its
backoff, a terminal error or a timeout fails at once, and the retries reach the metrics.
The `enrich_redis` case needs the test Redis (`bash scripts/services/redis.sh`)."""

from __future__ import annotations

import time
import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from deltalake import DeltaTable
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console

from sluiceway.core.context import RunContext, StepOutput
from sluiceway.core.events import Event, EventBus
from sluiceway.core.loader import load_spec, parse_spec
from sluiceway.core.retry import run_with_policy
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.runstore import RunRecord, RunStore
from sluiceway.core.spec import StepConfig
from sluiceway.core.spec_meta import RetryPolicy
from sluiceway.core.step_retry import apply_step
from sluiceway.engines.duckdb import DuckDBEngine
from sluiceway.errors import SpecError, TransientError
from sluiceway.observability.metrics import render_metrics
from sluiceway.observability.progress import ConsoleProgress
from sluiceway.transforms import enrich_redis

ROWS = "id,user_id,amount\n1,u1,2.5\n2,u2,0.5\n3,u3,4.0\n4,u1,7.0\n"
FAST = {"backoff": "10ms", "jitter": False}
FLAKY = """
from pathlib import Path
from sluiceway.errors import TransientError

COUNTER = Path({counter!r})

def transform(batch):
    calls = int(COUNTER.read_text()) + 1 if COUNTER.exists() else 1
    COUNTER.write_text(str(calls))
    if calls <= {failures}:
        raise {error}("the lookup service is busy (call " + str(calls) + ")")
    return batch
"""


def pipeline_spec(tmp_path: Path, steps: list[dict[str, Any]], **extra: Any) -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data/orders.csv").write_text(ROWS)
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": "data/*.csv", "format": "csv"}},
        "steps": steps,
        "sinks": [{"type": "delta", "path": "lake/orders"}],
        **extra,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def flaky_step(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    failures: int,
    error: str = "TransientError",
    retries: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A python step whose function raises `error` on its first `failures` calls."""
    module = f"sw_flaky_{uuid.uuid4().hex[:8]}"
    counter = tmp_path / "calls.txt"
    (tmp_path / f"{module}.py").write_text(
        FLAKY.format(counter=str(counter), failures=failures, error=error)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    step: dict[str, Any] = {"function": f"{module}:transform"}
    if retries is not None:
        step["retries"] = retries
    return {"python": step}


def calls(tmp_path: Path) -> int:
    return int((tmp_path / "calls.txt").read_text())


def options(tmp_path: Path, events: list[Event], waits: list[float]) -> RunOptions:
    return RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        subscribers=[events.append],
        sleep=waits.append,
    )


FILTER = {
    "sql": {"query": "SELECT * FROM input WHERE CAST(amount AS DOUBLE) > 1", "rows": "filter"}
}


def test_a_transient_step_error_is_retried_until_the_step_succeeds_with_exact_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = flaky_step(tmp_path, monkeypatch, failures=2, retries={"max_attempts": 3, **FAST})
    spec = load_spec(pipeline_spec(tmp_path, [FILTER, step]))
    events: list[Event] = []
    waits: list[float] = []

    result = run_pipeline(spec, options(tmp_path, events, waits))

    assert result.ok, result.error
    assert calls(tmp_path) == 3
    assert waits == [0.01, 0.02]
    retrying = [e.fields for e in events if e.name == "retrying"]
    assert [(f["attempt"], f["max_attempts"], f["step"]) for f in retrying] == [
        (2, 3, "steps[1].python"),
        (3, 3, "steps[1].python"),
    ]
    assert "busy (call 1)" in retrying[0]["error"]
    acc = result.accounting
    assert (acc.rows_in, acc.rows_filtered, acc.rows_written) == (4, 1, 3)
    assert DeltaTable(str(tmp_path / "lake/orders")).to_pyarrow_table().num_rows == 3
    assert [s["attempts"] for s in result.steps] == [1, 3]


def test_a_step_that_fails_transiently_on_every_attempt_fails_the_run_with_the_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = flaky_step(tmp_path, monkeypatch, failures=2, retries={"max_attempts": 2, **FAST})
    spec = load_spec(pipeline_spec(tmp_path, [step]))
    events: list[Event] = []

    result = run_pipeline(spec, options(tmp_path, events, []))

    assert result.status == "failed"
    assert result.retryable
    assert calls(tmp_path) == 2
    assert "busy (call 2)" in (result.error or "")
    assert "step=steps[0].python" in (result.error or "")
    assert "attempt=2/2" in (result.error or "")
    assert [e.fields["attempt"] for e in events if e.name == "retrying"] == [2]
    assert not (tmp_path / "lake/orders").exists()


def test_a_terminal_step_error_is_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = flaky_step(
        tmp_path, monkeypatch, failures=5, error="ValueError", retries={"max_attempts": 5, **FAST}
    )
    spec = load_spec(pipeline_spec(tmp_path, [step]))
    events: list[Event] = []
    waits: list[float] = []

    result = run_pipeline(spec, options(tmp_path, events, waits))

    assert result.status == "failed"
    assert not result.retryable
    assert "ValueError" in (result.error or "")
    assert (calls(tmp_path), waits) == (1, [])
    assert not [e for e in events if e.name == "retrying"]


def test_a_step_past_its_timeout_is_interrupted_not_retried_and_publishes_nothing(
    tmp_path: Path,
) -> None:
    slow = {
        "sql": {
            "query": "SELECT o.*, (SELECT count(*) FROM range(20000000000) t(x) "
            "WHERE x % 7 = 3) AS n FROM input o",
            "timeout": "1s",
            "retries": {"max_attempts": 3, **FAST},
        }
    }
    spec = load_spec(pipeline_spec(tmp_path, [slow]))
    events: list[Event] = []
    started = time.monotonic()

    result = run_pipeline(spec, options(tmp_path, events, []))

    assert result.status == "failed"
    assert "steps[0].sql exceeded its timeout 1s" in (result.error or "")
    assert not result.retryable
    assert time.monotonic() - started < 20
    assert not [e for e in events if e.name == "retrying"]
    assert not (tmp_path / "lake/orders").exists()


def test_a_step_within_its_timeout_runs_normally(tmp_path: Path) -> None:
    quick = {"sql": {"query": "SELECT * FROM input", "timeout": "30s"}}
    spec = load_spec(pipeline_spec(tmp_path, [quick]))

    result = run_pipeline(spec, options(tmp_path, [], []))

    assert result.ok, result.error
    assert DeltaTable(str(tmp_path / "lake/orders")).to_pyarrow_table().num_rows == 4


class TableThenFailure:
    """A step that leaves a table behind before failing transiently, once."""

    def __init__(self) -> None:
        self.calls = 0

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        self.calls += 1
        out = ctx.engine.create_table(
            ctx.engine.new_name("half"), f'SELECT * FROM "{table}"', purpose="test"
        )
        if self.calls == 1:
            raise TransientError("lost the connection halfway")
        return StepOutput(out)


def test_a_retry_starts_clean_without_the_tables_of_the_failed_attempt(tmp_path: Path) -> None:
    spec = load_spec(pipeline_spec(tmp_path, []))
    engine = DuckDBEngine()
    ctx = RunContext(
        pipeline=spec,
        run_id="run-1",
        logical_date=date(2025, 1, 15),
        engine=engine,
        base_dir=tmp_path,
        state_dir=tmp_path / ".sluice",
        events=EventBus("orders", "run-1"),
    )
    source = engine.create_table("src", "SELECT * FROM range(5) t(x)")
    config = StepConfig(retries=RetryPolicy(max_attempts=2, **FAST))

    out, attempts = apply_step(
        TableThenFailure(), config, ctx, source, rows_in=5, label="steps[0].x", sleep=lambda _: None
    )

    tables = {
        r[0] for r in engine.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert attempts == 2
    assert tables == {"src", out.table}
    assert engine.count(out.table) == 5
    engine.close()


def test_enrich_redis_retries_until_redis_answers(tmp_path: Path, forwarder: Any) -> None:
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis not reachable on 6379 ({exc}): run `bash scripts/services/redis.sh`")
    prefix = f"sluice-step-retry-{uuid.uuid4().hex[:8]}"
    client.hset(f"{prefix}:u1", mapping={"segment": "gold"})
    to_redis = forwarder(6379)
    step = {
        "enrich_redis": {
            "url": f"redis://127.0.0.1:{to_redis.port}/0",
            "key": f"{prefix}:{{user_id}}",
            "fields": {"segment": "segment"},
            "defaults": {"segment": "none"},
            "timeout_s": 2,
            "retries": {"max_attempts": 3, **FAST},
        }
    }
    spec = load_spec(pipeline_spec(tmp_path, [step]))
    events: list[Event] = []
    enrich_redis.clear_cache()
    try:
        result = run_pipeline(
            spec,
            RunOptions(
                base_dir=tmp_path,
                state_dir=tmp_path / ".sluice",
                subscribers=[events.append],
                sleep=lambda _: to_redis.start(),
            ),
        )
    finally:
        to_redis.close()
        client.delete(f"{prefix}:u1")
        enrich_redis.clear_cache()

    assert result.ok, result.error
    retrying = [e.fields for e in events if e.name == "retrying"]
    assert [(f["attempt"], f["step"]) for f in retrying] == [(2, "steps[0].enrich_redis")]
    assert "Redis unreachable" in retrying[0]["error"]
    rows = DeltaTable(str(tmp_path / "lake/orders")).to_pyarrow_table().to_pylist()
    assert sorted((r["id"], r["segment"]) for r in rows) == [
        ("1", "gold"),
        ("2", "none"),
        ("3", "none"),
        ("4", "gold"),
    ]
    assert result.accounting.rows_written == 4


def test_the_console_names_the_step_being_retried() -> None:
    console = Console(record=True, width=200)
    progress = ConsoleProgress(console)
    fields = {"attempt": 2, "max_attempts": 5, "next_in_s": 8.0, "error": "Redis unreachable"}

    progress(Event("retrying", "orders", "run-1", {**fields, "step": "steps[1].enrich_redis"}))
    progress(Event("retrying", "orders", "run-1", fields))

    lines = console.export_text().splitlines()
    assert lines[0].startswith("orders: steps[1].enrich_redis attempt 2/5, next in 8 s")
    assert lines[1].startswith("orders: attempt 2/5, next in 8 s")


def samples(state: Path) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = render_metrics(state / "runs.db").decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_step_retries_are_counted_per_step_in_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = flaky_step(tmp_path, monkeypatch, failures=2, retries={"max_attempts": 3, **FAST})
    spec = load_spec(pipeline_spec(tmp_path, [FILTER, step]))
    assert run_pipeline(spec, options(tmp_path, [], [])).ok

    found = samples(tmp_path / ".sluice")

    step_key = frozenset({("pipeline", "orders"), ("step", "steps[1].python")})
    first_key = frozenset({("pipeline", "orders"), ("step", "steps[0].sql")})
    assert found[("sluice_step_retries_total", step_key)] == 2
    assert found[("sluice_step_retries_total", first_key)] == 0
    assert found[("sluice_run_retries_total", frozenset({("pipeline", "orders")}))] == 0


def test_run_retries_sum_the_attempts_beyond_the_first_per_pipeline(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    for n, attempt in enumerate((1, 2, 3)):
        store.save(
            RunRecord(
                run_id=f"20250115T02000{n}-0000000{n}",
                pipeline="orders",
                logical_date="2025-01-15",
                status="failed" if attempt < 3 else "succeeded",
                started_at=f"20250115T02000{n}",
                finished_at=f"20250115T02000{n}",
                details={"attempt": attempt},
            )
        )

    found = samples(tmp_path)

    assert found[("sluice_run_retries_total", frozenset({("pipeline", "orders")}))] == 3


def test_a_run_retried_by_its_policy_shows_in_sluice_run_retries_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    step = flaky_step(tmp_path, monkeypatch, failures=1)
    spec = load_spec(pipeline_spec(tmp_path, [step], retries={"max_attempts": 3, **FAST}))

    result = run_with_policy(spec, options(tmp_path, [], []), sleep=lambda _: None)

    assert result.ok and result.attempt == 2
    found = samples(tmp_path / ".sluice")
    assert found[("sluice_run_retries_total", frozenset({("pipeline", "orders")}))] == 1


SPEC_HEAD = """version: 1
pipeline: orders
sources:
  orders: {type: files, path: data/*.csv, format: csv}
sinks:
  - {type: delta, path: lake/orders}
steps:
"""


def test_steps_load_with_shorthands_and_with_retries_and_timeout() -> None:
    spec = parse_spec(
        SPEC_HEAD
        + "  - sql: SELECT * FROM input\n"
        + "  - sql: {query: SELECT * FROM input, timeout: 30s, retries: {max_attempts: 4}}\n"
        + "  - rename: {amount: total}\n"
        + "  - rename: {columns: {total: amount}, timeout: 5m}\n"
    )

    first, second, renamed, full = spec.steps
    assert (first.timeout, first.retries) == (None, None)
    assert second.timeout == "30s" and second.retries is not None
    assert second.retries.max_attempts == 4
    assert renamed.columns == {"amount": "total"}  # type: ignore[attr-defined]
    assert full.columns == {"total": "amount"} and full.timeout == "5m"  # type: ignore[attr-defined]


def test_a_bad_step_timeout_or_policy_is_reported_with_path_and_line() -> None:
    with pytest.raises(SpecError) as caught:
        parse_spec(
            SPEC_HEAD
            + "  - sql: SELECT * FROM input\n"
            + "  - sql:\n"
            + "      query: SELECT * FROM input\n"
            + "      timeout: soon\n"
            + "      retries: {max_attempts: 0, backof: 1s}\n"
        )

    problems = {(p.path, p.line) for p in caught.value.problems}
    assert ("steps[1].sql.timeout", 11) in problems
    assert ("steps[1].sql.retries.max_attempts", 12) in problems
    assert ("steps[1].sql.retries.backof", 12) in problems
    assert "did you mean 'backoff'" in str(caught.value).lower()
