"""Benchmark: the `postgres_cdc` source applying mixed row changes to a Delta table by merge.

Creates `<schema>.accounts` (bigint key, integer, numeric(12,2), text, timestamptz, text),
loads `--rows` rows, runs `sluice run` once to take the initial snapshot (the run creates the
slot), then generates `--changes` changes (50% inserts, 35% updates, 15% deletes) in
transactions of `--txn-changes`, and runs `sluice run` again to apply them:

- backlog (default): every change is committed before the second run starts (throughput);
- live: the second run starts first and the changes are committed while it runs.

Prints the snapshot time, changes applied per second (first to last commit of the run
store's `stream_batches`), the batch latencies, the slot lag at the end, and checks that the
Delta table equals the source table row by row over every column (exit 1 otherwise). The
slot, the publication and the schema are dropped at the end, always.

    .venv/bin/python bench/cdc_apply.py                       # 100K rows, 500K changes
    .venv/bin/python bench/cdc_apply.py --changes 100000 --mode live
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import shutil
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import duckdb
import numpy as np
import psycopg
import pyarrow as pa
import yaml
from deltalake import DeltaTable

HERE = Path(__file__).resolve().parent
SLUICE = str(Path(sys.executable).parent / "sluice")
TABLE = "accounts"
COLUMNS = ("id", "customer_id", "balance", "status", "updated_at", "note")
ARROW_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("customer_id", pa.int32()),
        ("balance", pa.decimal128(12, 2)),
        ("status", pa.string()),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("note", pa.string()),
    ]
)
STATUSES = "ARRAY['open','active','frozen','closed']"


@dataclass
class Changes:
    inserted: int = 0
    updated: int = 0
    deleted: int = 0
    transactions: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return self.inserted + self.updated + self.deleted


def _stream_bench() -> ModuleType:
    """bench/stream_redis.py, whose sluice runner, stage timing and time parsing this
    benchmark shares."""
    spec = importlib.util.spec_from_file_location("bench_stream_redis", HERE / "stream_redis.py")
    assert spec is not None and spec.loader is not None
    if spec.name not in sys.modules:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules[spec.name]


def run_sluice(workdir: Path, env: dict[str, str], name: str, *, on_ready: Any = None) -> Any:
    """`sluice run` until idle (3 s); its events go to `workdir/events-<name>.jsonl`."""
    return _stream_bench().run_sluice(
        workdir,
        {**env, "BENCH_IDLE_EXIT": "3"},
        on_ready=on_ready,
        events_log=f"events-{name}.jsonl",
    )


def stage_times(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds between consecutive run events, by stage (`stream_redis.stage_times`)."""
    return _stream_bench().stage_times(events)  # type: ignore[no-any-return]


def _epoch(iso: str) -> float:
    return _stream_bench()._epoch(iso)  # type: ignore[no-any-return]


def create_table(pg: psycopg.Connection[Any], schema: str, rows: int) -> float:
    pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    pg.execute(f"CREATE SCHEMA {schema}")
    pg.execute(
        f"CREATE TABLE {schema}.{TABLE} (id bigint PRIMARY KEY, customer_id integer NOT NULL, "
        "balance numeric(12,2), status text, updated_at timestamptz, note text)"
    )
    started = time.perf_counter()
    pg.execute(
        f"INSERT INTO {schema}.{TABLE} SELECT i, (i * 7919) %% 50000, "
        f"round(((i * 37) %% 1000000) / 100.0 - 2500, 2), ({STATUSES})[1 + i %% 4], "
        "timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second' "
        "+ (i %% 999983) * interval '1 microsecond', "
        "CASE WHEN i %% 10 = 0 THEN NULL ELSE 'initial note ' || i END "
        "FROM generate_series(1, %s) i",
        (rows,),
    )
    pg.execute(f"VACUUM ANALYZE {schema}.{TABLE}")
    return time.perf_counter() - started


def generate_changes(
    dsn: str,
    schema: str,
    *,
    first_new_id: int,
    changes: int,
    per_txn: int,
    seed: int,
    rate: float | None = None,
) -> Changes:
    """Transactions of `per_txn` changes: inserts of new ids, then updates and deletes of
    consecutive existing ids from a random start. Counts come from the row counts."""
    rng = random.Random(seed)
    done = Changes()
    next_id = first_new_id
    table = f"{schema}.{TABLE}"
    started = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as pg:
        while done.total < changes:
            size = min(per_txn, changes - done.total)
            inserts = size * 50 // 100
            updates = size * 35 // 100
            deletes = size - inserts - updates
            step = done.transactions + 1
            with pg.transaction():
                cur = pg.execute(
                    f"INSERT INTO {table} SELECT i, (i * 7919) %% 50000, "
                    f"round(((i * 37) %% 1000000) / 100.0 - 2500, 2), ({STATUSES})[1 + i %% 4], "
                    "timestamptz '2026-06-01 00:00:00+00' + i * interval '1 second' "
                    "+ (i %% 999983) * interval '1 microsecond', "
                    "CASE WHEN i %% 7 = 0 THEN NULL ELSE 'inserted ' || i END "
                    "FROM generate_series(%s::bigint, %s::bigint) i",
                    (next_id, next_id + inserts - 1),
                )
                done.inserted += cur.rowcount
                next_id += inserts
                start = rng.randint(1, next_id)
                cur = pg.execute(
                    f"UPDATE {table} SET balance = balance + (id %% 97) / 100.0 + %s, "
                    f"status = ({STATUSES})[1 + (id + %s) %% 4], "
                    "updated_at = updated_at + %s * interval '1 millisecond', "
                    "note = CASE WHEN (id + %s) %% 5 = 0 THEN NULL ELSE 'updated ' || %s END "
                    f"WHERE id IN (SELECT id FROM {table} WHERE id >= %s ORDER BY id LIMIT %s)",
                    (step % 13, step, step, step, step, start, updates),
                )
                done.updated += cur.rowcount
                start = rng.randint(1, next_id)
                cur = pg.execute(
                    f"DELETE FROM {table} WHERE id IN "
                    f"(SELECT id FROM {table} WHERE id >= %s ORDER BY id LIMIT %s)",
                    (start, deletes),
                )
                done.deleted += cur.rowcount
            done.transactions += 1
            if rate:
                ahead = done.total / rate - (time.perf_counter() - started)
                if ahead > 0:
                    time.sleep(ahead)
    done.seconds = time.perf_counter() - started
    return done


def write_spec(workdir: Path, schema: str, args: argparse.Namespace) -> Path:
    spec = {
        "version": 1,
        "pipeline": "cdc_apply_bench",
        "mode": "stream",
        "stream": {"max_batch_rows": args.batch_rows, "max_batch_seconds": args.batch_seconds},
        "sources": {
            TABLE: {
                "type": "postgres_cdc",
                "dsn_env": "BENCH_PG_DSN",
                "table": f"{schema}.{TABLE}",
                "contract": {
                    "columns": {
                        "id": {"type": "bigint", "nullable": False},
                        "customer_id": {"type": "integer"},
                        "balance": {"type": "decimal", "precision": 12, "scale": 2},
                        "status": {"type": "string"},
                        "updated_at": {"type": "timestamp"},
                        "note": {"type": "string"},
                    }
                },
            }
        },
        "sinks": [
            {"type": "delta", "path": "lake/accounts", "mode": "merge", "merge_keys": ["id"]}
        ],
        "dead_letter": {"path": "lake/dead_letter"},
    }
    path = workdir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def commit_span(batches: list[dict[str, Any]]) -> tuple[int, float]:
    """Events of batches 2..n and the seconds between the first and the last commit."""
    if len(batches) < 2:
        return 0, float("nan")
    first, last = (_epoch(b["committed_at"]) for b in (batches[0], batches[-1]))
    return sum(b["events_in"] for b in batches[1:]), last - first


def slot_lag(pg: psycopg.Connection[Any], slot: str) -> int | None:
    row = pg.execute(
        "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
        "FROM pg_replication_slots WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    return None if row is None else int(row[0])


def compare(pg: psycopg.Connection[Any], schema: str, lake: Path) -> tuple[int, int, int, int]:
    """(source rows, delta rows, rows only in source, rows only in delta), every column."""
    with pg.cursor() as cur:
        cur.execute(f"SELECT {', '.join(COLUMNS)} FROM {schema}.{TABLE}")
        rows = cur.fetchall()
    source = pa.Table.from_arrays(
        [
            pa.array(list(c), type=f.type)
            for c, f in zip(zip(*rows, strict=True), ARROW_SCHEMA, strict=True)
        ]
        if rows
        else [pa.array([], type=f.type) for f in ARROW_SCHEMA],
        schema=ARROW_SCHEMA,
    )
    landed_all = DeltaTable(str(lake)).to_pyarrow_table()
    extra = [c for c in landed_all.column_names if c not in COLUMNS]
    if extra:
        print(f"  delta table's other columns (not compared): {extra}")
    landed = landed_all.select(list(COLUMNS))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.register("src", source)
    con.register("dst", landed)
    cast = (
        "id::BIGINT AS id, customer_id::INTEGER AS customer_id, "
        "balance::DECIMAL(12,2) AS balance, status, updated_at::TIMESTAMPTZ AS updated_at, note"
    )
    only_src = con.execute(
        f"SELECT count(*) FROM (SELECT {cast} FROM src EXCEPT ALL SELECT {cast} FROM dst)"
    ).fetchone()[0]
    only_dst = con.execute(
        f"SELECT count(*) FROM (SELECT {cast} FROM dst EXCEPT ALL SELECT {cast} FROM src)"
    ).fetchone()[0]
    if only_src or only_dst:
        sample = con.execute(
            f"(SELECT 'source' AS side, * FROM (SELECT {cast} FROM src EXCEPT ALL "
            f"SELECT {cast} FROM dst) LIMIT 5) UNION ALL (SELECT 'delta', * FROM "
            f"(SELECT {cast} FROM dst EXCEPT ALL SELECT {cast} FROM src) LIMIT 5)"
        ).fetchall()
        for row in sample:
            print(f"    differs: {row}")
    return source.num_rows, landed.num_rows, only_src, only_dst


def report_run(title: str, run: Any, count: int) -> None:
    batches = run.batches
    events, span = commit_span(batches)
    acc = run.summary.get("accounting", {})
    lat = np.array([b["batch_latency_s"] for b in batches]) if batches else np.zeros(1)
    print(f"\n{title}: {run.summary['status']}, {len(batches)} batches, {run.seconds:.1f} s wall")
    print(f"  accounting {acc}")
    print(f"  events_in (all batches) {sum(b['events_in'] for b in batches):,} for {count:,} sent")
    print(
        f"  applied rate        {events / span:>12,.0f} changes/s "
        f"(batches 2..n: {events:,} in {span:.2f} s, first to last commit)"
    )
    resumed = [_epoch(e["ts"]) for e in run.events if e.get("event") == "stream_resumed"]
    if resumed and batches:
        whole = _epoch(batches[-1]["committed_at"]) - resumed[0]
        run.extra["whole_s"] = whole
        print(
            f"  whole-run rate      {count / whole:>12,.0f} changes/s "
            f"({count:,} from stream_resumed to the last commit, {whole:.2f} s)"
        )
    print(
        f"  process wall        {run.seconds:.2f} s (start, imports and the 3 s idle exit included)"
    )
    print(
        f"  batch latency s     p50 {np.quantile(lat, 0.5):.3f}  p95 {np.quantile(lat, 0.95):.3f}"
        f"  max {lat.max():.3f}"
    )
    e2e = [b["e2e_p99_s"] for b in batches if b["e2e_p99_s"] is not None]
    if e2e:
        print(f"  e2e p99 per batch   median {np.median(e2e):.2f} s, max {max(e2e):.2f} s")
    lags = [b["lag"] for b in batches if b["lag"] is not None]
    if lags:
        print(
            f"  stream_batches.lag  first {lags[0]:,} B, max {max(lags):,} B, last {lags[-1]:,} B"
        )
    stages = stage_times(run.events)
    total = sum(stages.values())
    print("  time by stage (sum over batches, idle wait left out):")
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.005 * total:
            print(f"    {name:<44} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")
    print(
        f"  sluice process      peak RSS {run.peak_rss / 2**20:,.0f} MiB, CPU {run.cpu_s:.1f} s "
        f"({run.cpu_s / run.seconds:.2f} cores)"
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows before the snapshot")
    parser.add_argument("--changes", type=int, default=500_000)
    parser.add_argument("--txn-changes", type=int, default=5_000, help="changes per transaction")
    parser.add_argument(
        "--mode",
        choices=("backlog", "live"),
        default="backlog",
        help="backlog: commit every change, then run (throughput); live: commit them while the "
        "run goes",
    )
    parser.add_argument(
        "--rate", type=float, default=None, help="live: changes/s (default: flat out)"
    )
    parser.add_argument("--batch-rows", type=int, default=50_000, help="stream.max_batch_rows")
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--dsn",
        default=os.environ.get(
            "BENCH_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
        ),
    )
    parser.add_argument("--schema", default="sluice_bench_cdc")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sluice-bench/cdc_apply"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    schema = args.schema
    slot = f"sluice_{schema}_{TABLE}"
    try:
        pg = psycopg.connect(args.dsn, autocommit=True)
    except psycopg.OperationalError as exc:
        raise SystemExit(
            f"PostgreSQL not reachable ({exc}): start it with `bash scripts/services/postgres.sh`"
        ) from exc
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    write_spec(args.workdir, schema, args)
    env = {**os.environ, "BENCH_PG_DSN": args.dsn, "SLUICE_HOME": str(args.workdir / ".sluice")}
    load = os.getloadavg()
    version = pg.execute("SHOW server_version").fetchone()[0]
    print(
        f"{args.rows:,} rows, {args.changes:,} changes ({args.txn_changes:,} per transaction), "
        f"mode {args.mode}, batches of {args.batch_rows:,} / {args.batch_seconds} s, "
        f"PostgreSQL {version}, workdir {args.workdir}"
    )
    print(f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    ok = False
    try:
        cleanup(pg, schema, slot, close=False)  # leftovers of an interrupted run
        fill = create_table(pg, schema, args.rows)
        print(f"loaded {args.rows:,} rows in {fill:.1f} s (not measured)")

        snap = run_sluice(args.workdir, env, "snapshot")
        report_run("snapshot run", snap, args.rows)
        load = os.getloadavg()
        print(f"  load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

        gen_args = {
            "first_new_id": args.rows + 1,
            "changes": args.changes,
            "per_txn": args.txn_changes,
            "seed": args.seed,
        }
        if args.mode == "backlog":
            changes = generate_changes(args.dsn, schema, **gen_args)
            backlog = slot_lag(pg, slot)
            print(
                f"\ncommitted {changes.total:,} changes in {changes.transactions} transactions, "
                f"{changes.seconds:.1f} s ({changes.total / changes.seconds:,.0f}/s): "
                f"{changes.inserted:,} inserts, {changes.updated:,} updates, "
                f"{changes.deleted:,} deletes; slot backlog {backlog or 0:,} B of WAL"
            )
            run = run_sluice(args.workdir, env, "changes")
        else:
            holder: dict[str, Any] = {}

            def produce() -> None:
                holder["changes"] = generate_changes(args.dsn, schema, rate=args.rate, **gen_args)

            producer = threading.Thread(target=produce)
            run = run_sluice(args.workdir, env, "changes", on_ready=producer.start)
            producer.join()
            changes = holder["changes"]
            print(
                f"\ncommitted {changes.total:,} changes in {changes.transactions} transactions "
                f"during the run, {changes.seconds:.1f} s ({changes.total / changes.seconds:,.0f}/s)"
                f": {changes.inserted:,} inserts, {changes.updated:,} updates, "
                f"{changes.deleted:,} deletes"
            )
        report_run("change run", run, changes.total)
        print(
            f"  slot lag after the run {slot_lag(pg, slot) or 0:,} B of WAL (pg_replication_slots)"
        )
        load = os.getloadavg()
        print(f"  load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

        started = time.perf_counter()
        n_src, n_dst, only_src, only_dst = compare(pg, schema, args.workdir / "lake" / "accounts")
        ok = only_src == 0 and only_dst == 0 and n_src == n_dst
        print(
            f"\nverification ({time.perf_counter() - started:.1f} s): source {n_src:,} rows, "
            f"delta {n_dst:,} rows, only in source {only_src}, only in delta {only_dst}: "
            f"{'EQUAL' if ok else 'DIFFERENT'}"
        )
    finally:
        cleanup(pg, schema, slot)
    return 0 if ok else 1


def cleanup(pg: psycopg.Connection[Any], schema: str, slot: str, *, close: bool = True) -> None:
    """Drops the slot (it retains WAL), the publication and the schema."""
    for _ in range(40):
        try:
            pg.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (slot,),
            )
            break
        except psycopg.errors.ObjectInUse:
            time.sleep(0.25)  # the walsender of the last run is still exiting
    else:
        print(f"could not drop slot {slot}: drop it by hand, it retains WAL", file=sys.stderr)
    pg.execute(f"DROP PUBLICATION IF EXISTS {slot}")
    pg.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    if close:
        pg.close()


if __name__ == "__main__":
    sys.exit(main())
