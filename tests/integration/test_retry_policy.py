"""A batch run's `retries` policy and `timeout`: transient failures (a PostgreSQL server that
cannot be reached; start the real one with `bash scripts/services/postgres.sh`) are retried
with backoff, terminal ones are not, and a run past its timeout is stopped before it
publishes."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from deltalake import DeltaTable

from sluiceway.cli import main
from sluiceway.core.events import Event
from sluiceway.core.loader import load_spec
from sluiceway.core.retry import backoff_seconds, run_with_policy
from sluiceway.core.runner import RunOptions
from sluiceway.core.runstore import RunStore
from sluiceway.core.spec_meta import RetryPolicy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_spec(tmp_path: Path, *, port: int, table: str, **extra: Any) -> Path:
    spec = {
        "version": 1,
        "pipeline": "retried",
        "sources": {
            "orders": {
                "type": "postgres",
                "host": "127.0.0.1",
                "port": port,
                "user": "postgres",
                "dbname": "postgres",
                "table": table,
            }
        },
        "sinks": [
            {
                "type": "delta",
                "path": "lake/orders",
                "mode": "overwrite_partition",
                "replace_where": "true",
            }
        ],
        **extra,
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def options(tmp_path: Path, events: list[Event]) -> RunOptions:
    return RunOptions(
        base_dir=tmp_path, state_dir=tmp_path / ".sluice", subscribers=[events.append]
    )


def test_a_transient_failure_is_retried_up_to_max_attempts_with_growing_waits(
    tmp_path: Path, pg: Any, schema: str
) -> None:
    spec = write_spec(
        tmp_path,
        port=free_port(),
        table=f"{schema}.orders",
        retries={"max_attempts": 3, "backoff": "2s", "max_backoff": "3s", "jitter": False},
    )
    events: list[Event] = []
    waits: list[float] = []

    result = run_with_policy(load_spec(spec), options(tmp_path, events), sleep=waits.append)

    assert result.status == "failed" and result.retryable
    assert (result.attempt, result.max_attempts) == (3, 3)
    assert "cannot reach" in (result.error or "")
    assert waits == [2.0, 3.0]
    retrying = [e.fields for e in events if e.name == "retrying"]
    assert [(f["attempt"], f["max_attempts"], f["next_in_s"]) for f in retrying] == [
        (2, 3, 2.0),
        (3, 3, 3.0),
    ]
    runs = RunStore(tmp_path / ".sluice" / "runs.db").list(pipeline="retried")
    assert [r.status for r in runs] == ["failed", "failed", "failed"]


def test_a_run_that_fails_transiently_succeeds_on_the_next_attempt(
    tmp_path: Path, pg: Any, schema: str, forwarder: Any
) -> None:
    pg.execute(f"CREATE TABLE {schema}.orders (id int PRIMARY KEY, amount numeric(8, 2))")
    pg.execute(f"INSERT INTO {schema}.orders SELECT i, i * 1.5 FROM generate_series(1, 50) i")
    to_postgres = forwarder(5432)
    spec = write_spec(
        tmp_path,
        port=to_postgres.port,
        table=f"{schema}.orders",
        retries={"max_attempts": 4, "backoff": "10ms"},
    )
    try:
        result = run_with_policy(
            load_spec(spec), options(tmp_path, []), sleep=lambda _: to_postgres.start()
        )
    finally:
        to_postgres.close()

    assert result.ok, result.error
    assert (result.attempt, result.max_attempts) == (2, 4)
    assert DeltaTable(str(tmp_path / "lake/orders")).to_pyarrow_table().num_rows == 50


def test_a_terminal_failure_is_not_retried(tmp_path: Path) -> None:
    spec = {
        "version": 1,
        "pipeline": "terminal",
        "sources": {"orders": {"type": "files", "path": "missing/*.csv", "format": "csv"}},
        "sinks": [{"type": "delta", "path": "lake/orders"}],
        "retries": {"max_attempts": 5, "backoff": "10ms"},
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    waits: list[float] = []

    result = run_with_policy(
        load_spec(tmp_path / "pipeline.yaml"), options(tmp_path, []), sleep=waits.append
    )

    assert result.status == "failed" and not result.retryable
    assert (result.attempt, waits) == (1, [])


def test_backoff_doubles_up_to_the_cap_and_jitter_stays_within_a_quarter() -> None:
    policy = RetryPolicy(backoff="10s", max_backoff="25s", jitter=False)
    assert [backoff_seconds(policy, n, lambda: 0.5) for n in (1, 2, 3, 4)] == [10, 20, 25, 25]
    jittered = RetryPolicy(backoff="8s", max_backoff="1h")
    assert backoff_seconds(jittered, 2, lambda: 0.0) == 12.0
    assert backoff_seconds(jittered, 2, lambda: 0.999999) == 20.0


def slow_pipeline(tmp_path: Path) -> Path:
    """A pipeline whose step runs far past its 1 s timeout."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data/orders.csv").write_text("id,amount\n1,2.5\n2,3.5\n")
    spec = {
        "version": 1,
        "pipeline": "slow",
        "sources": {"orders": {"type": "files", "path": "data/*.csv", "format": "csv"}},
        "steps": [
            {
                "sql": "SELECT o.*, (SELECT count(*) FROM range(20000000000) t(x) "
                "WHERE x % 7 = 3) AS n FROM input o"
            }
        ],
        "sinks": [{"type": "delta", "path": "lake/orders"}],
        "timeout": "1s",
    }
    (tmp_path / "pipeline.yaml").write_text(yaml.safe_dump(spec))
    return tmp_path / "pipeline.yaml"


def test_a_run_past_its_timeout_is_interrupted_and_publishes_nothing(tmp_path: Path) -> None:
    slow_pipeline(tmp_path)
    started = time.monotonic()

    result = run_with_policy(load_spec(tmp_path / "pipeline.yaml"), options(tmp_path, []))

    assert result.status == "failed"
    assert "exceeded its timeout (1s)" in (result.error or "")
    assert result.retryable
    assert time.monotonic() - started < 20
    assert not (tmp_path / "lake/orders").exists()


def test_a_timed_out_run_says_its_count_is_incomplete_not_unbalanced(tmp_path: Path) -> None:
    slow_pipeline(tmp_path)

    said = CliRunner().invoke(
        main, ["run", str(tmp_path / "pipeline.yaml"), "--state-dir", str(tmp_path / ".sluice")]
    )

    assert said.exit_code == 1
    assert "accounting: not complete" in said.output
    assert "NOT balanced" not in said.output  # the sign of lost rows; none were


def test_sluice_run_announces_each_retry_with_attempt_and_wait(
    tmp_path: Path, pg: Any, schema: str
) -> None:
    spec = write_spec(
        tmp_path,
        port=free_port(),
        table=f"{schema}.orders",
        retries={"max_attempts": 2, "backoff": "10ms", "jitter": False},
    )

    out = CliRunner().invoke(main, ["run", str(spec), "--state-dir", str(tmp_path / ".sluice")])

    assert out.exit_code == 1
    assert "attempt 2/2, next in 0 s" in out.output
    assert "attempt 2/2" in out.output.split("FAILED", 1)[1]
