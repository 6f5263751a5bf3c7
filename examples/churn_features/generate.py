"""Generate the churn example's inputs: customers and transactions in PostgreSQL, the user
behaviour export (NDJSON) and the support tickets (CSV), with a few defects.

    .venv/bin/python examples/churn_features/generate.py                    # 1M customers, ~20M transactions
    .venv/bin/python examples/churn_features/generate.py --customers 2000 --transactions 40000

Customers and transactions are built as Arrow tables with numpy and loaded with a binary
`COPY` (ADBC ingest) into `<schema>.customers` and `<schema>.transactions`, which are
replaced. The files go to `data/behaviour/behaviour.ndjson` and `data/tickets/tickets.csv`
under `--out` (default: next to this script). Everything depends only on `--seed`.

Activity spans the year before `--as-of` (default 2025-01-31) plus that day, so a run for
`--as-of` sees all of it and a backfill for an earlier date sees less.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

HERE = Path(__file__).resolve().parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
DEFAULT_AS_OF = date(2025, 1, 31)
HISTORY_DAYS = 366
BEHAVIOUR_DAYS = 180
TICKET_DAYS = 365
DAY_US = 86_400_000_000
COUNTRIES = np.array(["DE", "FR", "NL", "ES", "IT", "PL", "SE", "GB", "US", "BR"])
DOMAINS = np.array(["example.com", "mail.example.org", "shop.example.net", "example.de"])
DEVICES = np.array(["web", "ios", "android"])
CATEGORIES = np.array(["billing", "delivery", "account", "product", "other"])
CHANNELS = np.array(["email", "chat", "phone"])
INGEST_CHUNK = 2_000_000
TABLES = {
    "customers": "user_id bigint, email text, country text, signup_at timestamptz",
    "transactions": "transaction_id bigint, user_id bigint, amount numeric(12, 2), "
    "created_at timestamptz",
}


@dataclass(frozen=True)
class Plan:
    """What to generate: sizes, seed, the last day of activity, where it goes."""

    customers: int
    transactions: int
    seed: int
    as_of: date
    dsn: str
    schema: str
    out: Path


def parse_args(argv: list[str] | None = None) -> Plan:
    """The command line as a Plan."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers (1M)")
    parser.add_argument(
        "--transactions", type=int, default=None, help="transactions (default 20 per customer)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument("--dsn", default=DEFAULT_DSN, help=f"PostgreSQL ({DEFAULT_DSN})")
    parser.add_argument("--schema", default="churn", help="PostgreSQL schema (churn)")
    parser.add_argument(
        "--as-of", type=date.fromisoformat, default=DEFAULT_AS_OF, help="last day of activity"
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder that receives data/")
    args = parser.parse_args(argv)
    transactions = args.transactions if args.transactions is not None else 20 * args.customers
    if args.customers < 10 or transactions < 1:
        parser.error("--customers must be at least 10 and --transactions at least 1")
    return Plan(
        args.customers, transactions, args.seed, args.as_of, args.dsn, args.schema, args.out
    )


def epoch_us(day: date) -> int:
    """Microseconds since 1970-01-01 UTC of midnight at the start of `day`."""
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def activity(rng: np.random.Generator, customers: int, end_us: int) -> tuple[np.ndarray, ...]:
    """Per customer: a weight (how active), and the instant they stopped (churn) or end_us."""
    weight = rng.lognormal(0.0, 0.8, customers)
    churned = rng.random(customers) < 0.3
    stop = end_us - (rng.random(customers) * 300 * DAY_US).astype(np.int64)
    return weight, np.where(churned, stop, end_us)


def draw_users(rng: np.random.Generator, weight: np.ndarray, n: int) -> np.ndarray:
    """n user ids (1-based), drawn with probability proportional to weight, sorted."""
    cdf = np.cumsum(weight)
    return np.sort(np.searchsorted(cdf, rng.random(n) * cdf[-1]).astype(np.int64) + 1)


def instants(
    rng: np.random.Generator, users: np.ndarray, start_us: int, stop_us: np.ndarray
) -> np.ndarray:
    """A uniform instant in [start_us, the user's stop) for each row."""
    stop = stop_us[users - 1]
    return start_us + (rng.random(len(users)) * (stop - start_us)).astype(np.int64)


def customers_table(rng: np.random.Generator, n: int, end_us: int) -> pa.Table:
    """user_id, email (a few malformed), country, signup_at."""
    ids = np.arange(1, n + 1, dtype=np.int64)
    domains = DOMAINS[rng.integers(0, len(DOMAINS), n)]
    emails = np.char.add(np.char.add("user", ids.astype(str)), np.char.add("@", domains))
    bad = rng.choice(n, max(1, n // 2000), replace=False)
    emails[bad] = np.char.replace(emails[bad], "@", " at ")
    signup = end_us - (rng.random(n) * 4 * 365 * DAY_US).astype(np.int64)
    return pa.table(
        {
            "user_id": ids,
            "email": pa.array(emails.tolist(), pa.string()),
            "country": pa.array(COUNTRIES[rng.integers(0, len(COUNTRIES), n)].tolist()),
            "signup_at": pa.array(signup, pa.timestamp("us", tz="UTC")),
        }
    )


def decimal_cents(cents: np.ndarray) -> pa.Array:
    """An Arrow decimal128(12, 2) array from integer cents, without Python objects."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)
    return pa.Array.from_buffers(pa.decimal128(12, 2), len(cents), [None, pa.py_buffer(words)])


def transactions_table(
    rng: np.random.Generator, plan: Plan, weight: np.ndarray, stop: np.ndarray
) -> pa.Table:
    """transaction_id, user_id, amount (a few negative, a few NULL users), created_at."""
    n, end_us = plan.transactions, epoch_us(plan.as_of + timedelta(days=1))
    users = draw_users(rng, weight, n)
    created = instants(rng, users, end_us - HISTORY_DAYS * DAY_US, stop)
    cents = np.maximum(1, np.round(rng.lognormal(3.3, 0.9, n) * 100)).astype(np.int64)
    defects = rng.choice(n, max(2, n // 100_000), replace=False)
    cents[defects[::2]] *= -1
    user_ids = pa.array(users, mask=np.isin(np.arange(n), defects[1::2]))
    return pa.table(
        {
            "transaction_id": np.arange(1, n + 1, dtype=np.int64),
            "user_id": user_ids,
            "amount": decimal_cents(cents),
            "created_at": pa.array(created, pa.timestamp("us", tz="UTC")),
        }
    )


def load_postgres(plan: Plan, customers: pa.Table, transactions: pa.Table) -> None:
    """Replace <schema>.customers and <schema>.transactions with binary COPY (ADBC ingest)."""
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(plan.dsn) as conn, conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {plan.schema}")
        for name, ddl in TABLES.items():
            cur.execute(f"DROP TABLE IF EXISTS {plan.schema}.{name}")
            cur.execute(f"CREATE TABLE {plan.schema}.{name} ({ddl})")
        cur.adbc_ingest("customers", customers, mode="append", db_schema_name=plan.schema)
        for batch in transactions.to_batches(max_chunksize=INGEST_CHUNK):
            cur.adbc_ingest(
                "transactions",
                pa.Table.from_batches([batch]),
                mode="append",
                db_schema_name=plan.schema,
            )
        conn.commit()
        for name in TABLES:
            cur.execute(f"ANALYZE {plan.schema}.{name}")
        conn.commit()


def behaviour_table(
    rng: np.random.Generator, plan: Plan, weight: np.ndarray, stop: np.ndarray
) -> pa.Table:
    """Sessions: session_id, user_id, login_at, page_views, device (~3 per customer)."""
    n, end_us = 3 * plan.customers, epoch_us(plan.as_of + timedelta(days=1))
    users = draw_users(rng, weight, n)
    login = instants(rng, users, end_us - BEHAVIOUR_DAYS * DAY_US, stop)
    login = np.maximum(login, end_us - BEHAVIOUR_DAYS * DAY_US)
    return pa.table(
        {
            "session_id": pa.array(np.char.add("s", np.arange(1, n + 1).astype(str)).tolist()),
            "user_id": users,
            "login_at": pa.array(login, pa.timestamp("us", tz="UTC")),
            "page_views": 1 + rng.poisson(6, n).astype(np.int64),
            "device": pa.array(DEVICES[rng.integers(0, len(DEVICES), n)].tolist()),
        }
    )


def tickets_table(
    rng: np.random.Generator, plan: Plan, weight: np.ndarray, stop: np.ndarray
) -> pa.Table:
    """Tickets: ticket_id, user_id, opened_at, resolved_at (NULL when open), category, channel."""
    n, end_us = max(1, plan.customers * 2 // 5), epoch_us(plan.as_of + timedelta(days=1))
    users = draw_users(rng, weight, n)
    opened = instants(rng, users, end_us - TICKET_DAYS * DAY_US, stop)
    took = (rng.exponential(2.5, n) * DAY_US).astype(np.int64) + 600_000_000
    resolved = opened + took
    return pa.table(
        {
            "ticket_id": np.char.add("T", np.arange(1, n + 1).astype(str)).tolist(),
            "user_id": users,
            "opened_at": pa.array(opened, pa.timestamp("us", tz="UTC")),
            "resolved_at": pa.array(
                resolved, pa.timestamp("us", tz="UTC"), mask=resolved >= end_us
            ),
            "category": CATEGORIES[rng.integers(0, len(CATEGORIES), n)].tolist(),
            "channel": CHANNELS[rng.integers(0, len(CHANNELS), n)].tolist(),
        }
    )


ISO = "strftime({c}, '%Y-%m-%dT%H:%M:%S.%fZ')"


def write_behaviour(table: pa.Table, path: Path, rng: np.random.Generator) -> int:
    """Write the NDJSON export, then append defective lines; return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("sessions", table)
    con.execute(
        f"COPY (SELECT session_id, user_id, {ISO.format(c='login_at')} AS login_at, page_views, "
        f"device FROM sessions) TO '{path}' (FORMAT json)"
    )
    defects = behaviour_defects(table, rng)
    with path.open("a", encoding="utf-8") as out:
        out.writelines(line + "\n" for line in defects)
    return len(defects)


def behaviour_defects(table: pa.Table, rng: np.random.Generator) -> list[str]:
    """Truncated JSON, a NULL user, negative page views, an unreadable login time."""
    count = max(4, table.num_rows // 20_000)
    users = rng.integers(1, largest(table["user_id"]) + 1, count)
    lines: list[str] = []
    for i, user in enumerate(users.tolist()):
        row = {
            "session_id": f"bad{i}",
            "user_id": user,
            "login_at": "2024-12-01T10:00:00Z",
            "page_views": 3,
            "device": "web",
        }
        kind = i % 4
        if kind == 0:
            lines.append(json.dumps(row)[:40])
            continue
        if kind == 1:
            row["user_id"] = None
        elif kind == 2:
            row["page_views"] = -5
        else:
            row["login_at"] = "yesterday"
        lines.append(json.dumps(row))
    return lines


def largest(column: pa.ChunkedArray) -> int:
    """The largest value of an integer column."""
    import pyarrow.compute as pc

    return int(pc.max(column).as_py())


def write_tickets(table: pa.Table, path: Path, rng: np.random.Generator) -> int:
    """Write the tickets CSV, then append defective lines; return how many."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("tickets", table)
    con.execute(
        f"COPY (SELECT ticket_id, user_id, {ISO.format(c='opened_at')} AS opened_at, "
        f"{ISO.format(c='resolved_at')} AS resolved_at, category, channel FROM tickets) "
        f"TO '{path}' (FORMAT csv, HEADER true)"
    )
    count = max(4, table.num_rows // 10_000)
    users = rng.integers(1, largest(table["user_id"]) + 1, count).tolist()
    templates = (
        "X{i},{u},2024-12-01T10:00:00Z,2024-12-02T10:00:00Z,billing",  # a field short
        "X{i},,2024-12-01T10:00:00Z,2024-12-02T10:00:00Z,billing,email",  # no user
        "X{i},{u},01/12/2024 10:00,2024-12-02T10:00:00Z,billing,email",  # not ISO
        "X{i},{u},2024-12-01T10:00:00Z,2024-12-02T10:00:00Z,refund,fax",  # unknown values
    )
    with path.open("a", encoding="utf-8") as out:
        for i, user in enumerate(users):
            out.write(templates[i % 4].format(i=i, u=user) + "\n")
    return count


def main(argv: list[str] | None = None) -> None:
    """Generate everything the plan asks for and print what went where."""
    plan = parse_args(argv)
    rng = np.random.default_rng(plan.seed)
    started = time.perf_counter()
    weight, stop = activity(rng, plan.customers, epoch_us(plan.as_of + timedelta(days=1)))
    customers = customers_table(rng, plan.customers, epoch_us(plan.as_of))
    transactions = transactions_table(rng, plan, weight, stop)
    load_postgres(plan, customers, transactions)
    print(
        f"{plan.schema}.customers: {customers.num_rows:,} rows, {plan.schema}.transactions: "
        f"{transactions.num_rows:,} rows ({time.perf_counter() - started:.1f}s)",
        flush=True,
    )
    del transactions
    data = plan.out / "data"
    sessions = behaviour_table(rng, plan, weight, stop)
    bad_sessions = write_behaviour(sessions, data / "behaviour" / "behaviour.ndjson", rng)
    tickets = tickets_table(rng, plan, weight, stop)
    bad_tickets = write_tickets(tickets, data / "tickets" / "tickets.csv", rng)
    print(
        f"{data}/behaviour/behaviour.ndjson: {sessions.num_rows:,} sessions + {bad_sessions} "
        f"defective lines; {data}/tickets/tickets.csv: {tickets.num_rows:,} tickets + "
        f"{bad_tickets} defective lines ({time.perf_counter() - started:.1f}s in all)"
    )


if __name__ == "__main__":
    main()
