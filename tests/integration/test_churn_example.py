"""The churn_features example end to end against a real PostgreSQL (start it with
`bash scripts/services/postgres.sh`): a small generated dataset, two runs for one date
(idempotent), a backfill date (a new partition), and features recomputed by hand."""

from __future__ import annotations

import csv
import hmac
import importlib.util
import json
import os
import secrets
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from deltalake import DeltaTable

from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn_features"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
PG_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
START = "bash scripts/services/postgres.sh"
DAY = date(2025, 1, 31)
BACKFILL = date(2025, 1, 10)
CUSTOMERS = 2000
CATEGORIES = {"billing", "delivery", "account", "product", "other"}
CHANNELS = {"email", "chat", "phone"}


@pytest.fixture(scope="module")
def pg() -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test server (the test fails, never skips)."""
    try:
        conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL not reachable on 127.0.0.1:5432 ({exc}): start it with `{START}`")
    yield conn
    conn.close()


def load_generator() -> ModuleType:
    """examples/churn_features/generate.py as a module (examples are not a package)."""
    spec = importlib.util.spec_from_file_location("churn_generate", EXAMPLE / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def schema() -> str:
    """The PostgreSQL schema of this module's data."""
    return f"sw_churn_{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def example(
    pg: psycopg.Connection[Any], schema: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """The example's spec in a folder of its own, its data generated (a schema of its own)."""
    folder = tmp_path_factory.mktemp("churn")
    shutil.copy(EXAMPLE / "pipeline.yaml", folder / "pipeline.yaml")
    options = f"--customers {CUSTOMERS} --seed 11 --dsn {PG_URL} --schema {schema}".split()
    load_generator().main([*options, "--out", str(folder)])
    with pytest.MonkeyPatch.context() as env:
        env.setenv("CHURN_PG_SCHEMA", schema)
        env.setenv("SLUICE_HMAC_KEY", secrets.token_hex(16))
        env.setenv("SLUICE_ENCRYPTION_KEY", secrets.token_hex(32))
        yield folder
    pg.execute(f"DROP SCHEMA {schema} CASCADE")


def run(folder: Path, day: date) -> Any:
    options = RunOptions(logical_date=day, base_dir=folder, state_dir=folder / ".sluice")
    result = run_pipeline(load_spec(folder / "pipeline.yaml"), options)
    assert result.ok, result.error
    return result


def table_rows(folder: Path) -> list[dict[str, Any]]:
    rows = DeltaTable(str(folder / "lake/gold/churn_features")).to_pyarrow_table().to_pylist()
    return sorted(rows, key=lambda r: (r["feature_date"], r["user_id"]))


@pytest.fixture(scope="module")
def runs(example: Path) -> dict[str, Any]:
    """Run the date twice, snapshotting the table after each, then a backfill date."""
    first = run(example, DAY)
    after_first = table_rows(example)
    second = run(example, DAY)
    after_second = table_rows(example)
    backfill = run(example, BACKFILL)
    return {
        "results": (first, second, backfill),
        "after_first": after_first,
        "after_second": after_second,
        "after_backfill": table_rows(example),
    }


# --- features by hand -----------------------------------------------------------------------


@dataclass
class Raw:
    """A customer's valid input rows, read without sluiceway."""

    email: str
    transactions: list[tuple[datetime, Decimal]] = field(default_factory=list)
    sessions: list[tuple[datetime, int]] = field(default_factory=list)
    tickets: list[tuple[datetime, datetime | None]] = field(default_factory=list)


def iso(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def raw_inputs(pg: psycopg.Connection[Any], folder: Path, schema: str) -> dict[int, Raw]:
    """Every valid customer with their valid transactions, sessions and tickets."""
    people = {
        uid: Raw(email)
        for uid, email in pg.execute(f"SELECT user_id, email FROM {schema}.customers")
        if "@" in email
    }
    for uid, amount, at in pg.execute(
        f"SELECT user_id, amount, created_at FROM {schema}.transactions "
        "WHERE user_id IS NOT NULL AND amount >= 0"
    ):
        if uid in people:
            people[uid].transactions.append((at, amount))
    for line in (folder / "data/behaviour/behaviour.ndjson").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        login = iso(row["login_at"])
        if row["user_id"] in people and login and row["page_views"] >= 0:
            people[row["user_id"]].sessions.append((login, row["page_views"]))
    with (folder / "data/tickets/tickets.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if None in row or not row["user_id"] or row["category"] not in CATEGORIES:
                continue
            opened = iso(row["opened_at"])
            if opened and row["channel"] in CHANNELS and int(row["user_id"]) in people:
                closed = iso(row["resolved_at"]) if row["resolved_at"] else None
                people[int(row["user_id"])].tickets.append((opened, closed))
    return people


def features_by_hand(raw: Raw, day: date) -> dict[str, Any]:
    """The issue's features as of the end of `day` (UTC), in plain Python."""
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    since30, since90 = end - timedelta(days=30), end - timedelta(days=90)
    past = [amount for at, amount in raw.transactions if at < end]
    recent = [amount for at, amount in raw.transactions if since30 <= at < end]
    logins = [at for at, _ in raw.sessions if at < end]
    tickets = [(o, c) for o, c in raw.tickets if since90 <= o < end]
    resolved = [(c - o).total_seconds() / 86400 for o, c in tickets if c is not None and c < end]
    return {
        "total_spend_30d": sum(recent, Decimal("0.00")),
        "transaction_count_30d": len(recent),
        "avg_transaction_value": float(sum(past) / len(past)) if past else None,
        "days_since_last_login": (day - max(logins).date()).days if logins else None,
        "page_views_30d": sum(v for at, v in raw.sessions if since30 <= at < end),
        "ticket_count_90d": len(tickets),
        "avg_resolution_time_days": sum(resolved) / len(resolved) if resolved else None,
    }


def assert_every_case_is_covered(people: dict[int, Raw], day: date) -> None:
    """The data has customers with and without each kind of activity, so the comparison
    below exercises every branch of every feature."""
    features = [features_by_hand(raw, day) for raw in people.values()]
    for name in ("avg_transaction_value", "days_since_last_login", "avg_resolution_time_days"):
        assert any(f[name] is None for f in features), name
        assert any(f[name] is not None for f in features), name
    for name in ("transaction_count_30d", "page_views_30d", "ticket_count_90d"):
        assert any(f[name] == 0 for f in features), name
        assert any(f[name] > 1 for f in features), name


def assert_features(row: dict[str, Any], expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        if isinstance(value, float):
            assert row[name] == pytest.approx(value, rel=1e-9), (row["user_id"], name)
        else:
            assert row[name] == value, (row["user_id"], name)


# --- tests ----------------------------------------------------------------------------------


def test_a_rerun_of_the_same_date_leaves_the_same_table(runs) -> None:
    first, second, _ = runs["results"]
    assert first.accounting.rows_in == CUSTOMERS
    assert first.accounting.rows_rejected == 1  # the one customer with a malformed email
    assert second.accounting == first.accounting
    assert len(runs["after_first"]) == CUSTOMERS - 1
    assert runs["after_second"] == runs["after_first"]


def test_a_backfill_date_adds_its_partition_and_keeps_the_others(runs) -> None:
    by_date: dict[date, list[dict[str, Any]]] = {}
    for row in runs["after_backfill"]:
        by_date.setdefault(row["feature_date"], []).append(row)
    assert sorted(by_date) == [BACKFILL, DAY]
    assert by_date[DAY] == runs["after_first"]
    assert len(by_date[BACKFILL]) == CUSTOMERS - 1
    spend = {r["user_id"]: r["total_spend_30d"] for r in by_date[BACKFILL]}
    assert spend != {r["user_id"]: r["total_spend_30d"] for r in by_date[DAY]}


@pytest.mark.parametrize("day", [DAY, BACKFILL])
def test_every_customers_features_equal_a_hand_computation(runs, example, pg, schema, day) -> None:
    people = raw_inputs(pg, example, schema)
    assert_every_case_is_covered(people, day)
    table = {r["user_id"]: r for r in runs["after_backfill"] if r["feature_date"] == day}
    assert sorted(table) == sorted(people)
    for uid, raw in people.items():
        assert_features(table[uid], features_by_hand(raw, day))


def test_the_email_leaves_as_an_hmac_token(runs, pg, schema) -> None:
    email = pg.execute(f"SELECT email FROM {schema}.customers WHERE user_id = 1").fetchone()[0]
    key = os.environ["SLUICE_HMAC_KEY"].encode()
    row = next(r for r in runs["after_first"] if r["user_id"] == 1)
    assert row["email"] == hmac.new(key, email.encode(), "sha256").hexdigest()
