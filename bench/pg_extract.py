"""Benchmark: a PostgreSQL table extracted to Delta by the `postgres` source, against the floor.

In the same run and on the same table: the floor is `COPY (SELECT * FROM t) TO STDOUT
(FORMAT binary)` read by psycopg 3 into /dev/null; sluiceway is a pipeline with the table as
its `postgres` source and a Delta sink (append), run in a fresh subprocess. Prints rows/s of
both and the ratio sluiceway/floor (goal: at least 0.6).

    .venv/bin/python bench/pg_extract.py --rows 10000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psycopg

GOAL = 0.6
PSYCOPG = "floor: psycopg COPY"
PSQL = "floor: psql COPY"
SLUICE = "sluiceway"
DAY = date(2025, 1, 15)
DEFAULT_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
TABLE_DDL = """CREATE TABLE {t} (
    id bigint, user_id integer, amount numeric(12, 2), created_at timestamptz,
    status text, note text, is_refund boolean)"""
TABLE_FILL = """INSERT INTO {t}
SELECT i, (i * 7919) % 1000000, round((((i * 48271) % 100000) / 100.0)::numeric, 2),
       timestamptz '2024-01-01 00:00:00+00' + (i % 31536000) * interval '1 second',
       (ARRAY['paid', 'pending', 'failed', 'refunded'])[1 + i % 4],
       'order note ' || md5(i::text), i % 97 = 0
FROM generate_series({start}::bigint, {stop}::bigint) AS i"""
FILL_CHUNK = 2_000_000


@dataclass
class Measurement:
    """One measured run of one side."""

    role: str
    seconds: float
    rows: int
    peak_rss_mb: float = 0.0
    load_before: float = 0.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --child is internal (the measured sluiceway subprocess)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in the table")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side (median reported)")
    parser.add_argument("--dsn", default=os.environ.get("BENCH_PG_DSN", DEFAULT_DSN))
    parser.add_argument("--schema", default="sluice_bench", help="schema of the bench table")
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/sluice-bench/pg_extract"), help="lake, spec"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")
    return args


def table_name(args: argparse.Namespace) -> str:
    return f"{args.schema}.extract_{args.rows}"


def ensure_table(conn: psycopg.Connection[Any], table: str, rows: int) -> float:
    """Create and fill the table unless it already holds `rows` rows; return seconds spent."""
    started = time.perf_counter()
    schema = table.split(".")[0]
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    if exists and exists[0]:
        count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        if count and count[0] == rows:
            return 0.0
        conn.execute(f"DROP TABLE {table}")
    conn.execute(TABLE_DDL.format(t=table))
    for start in range(1, rows + 1, FILL_CHUNK):
        stop = min(rows, start + FILL_CHUNK - 1)
        conn.execute(TABLE_FILL.format(t=table, start=start, stop=stop))
    conn.execute(f"VACUUM ANALYZE {table}")
    return time.perf_counter() - started


def copy_floor(dsn: str, table: str) -> Measurement:
    """The floor: binary COPY of every row, read by psycopg and written to /dev/null.

    psycopg hands over one chunk per row (PostgreSQL sends a CopyData message per row), so
    this floor includes a Python loop of one iteration per row; `psql_floor` has none."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    size = 0
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        open(os.devnull, "wb") as sink,
        cur.copy(f"COPY (SELECT * FROM {table}) TO STDOUT (FORMAT binary)") as copy,
    ):
        for chunk in copy:
            sink.write(chunk)
            size += len(chunk)
    seconds = time.perf_counter() - started
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    print(f"  floor: {size / 1e6:,.0f} MB of binary COPY", flush=True)
    return Measurement(PSYCOPG, seconds, int(row[0]) if row else 0, 0.0, load)


def psql_floor(dsn: str, table: str, rows: int) -> Measurement:
    """The same COPY by psql (C, libpq) into /dev/null: the floor without Python."""
    load = os.getloadavg()[0]
    copy = f"COPY (SELECT * FROM {table}) TO STDOUT (FORMAT binary)"
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        subprocess.run(["psql", "-X", "-q", "-d", dsn, "-c", copy], stdout=sink, check=True)
    return Measurement(PSQL, time.perf_counter() - started, rows, 0.0, load)


def spec(args: argparse.Namespace) -> dict[str, Any]:
    """The extract pipeline: the table as a postgres source, a Delta sink, nothing between."""
    return {
        "version": 1,
        "pipeline": "pg_extract_bench",
        "sources": {
            "rows": {"type": "postgres", "dsn_env": "BENCH_PG_DSN", "table": table_name(args)}
        },
        "sinks": [{"type": "delta", "path": "lake/extract", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


def run_sluiceway(args: argparse.Namespace) -> Measurement:
    """One sluiceway run in a fresh subprocess (peak RSS from wait4), on an empty lake."""
    import yaml

    workdir = args.workdir.resolve()
    shutil.rmtree(workdir / "lake", ignore_errors=True)
    shutil.rmtree(workdir / ".sluice", ignore_errors=True)
    (workdir / "pipeline.yaml").write_text(yaml.safe_dump(spec(args), sort_keys=False))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--rows",
        str(args.rows),
        "--schema",
        args.schema,
        "--workdir",
        str(workdir),
    ]
    env = {**os.environ, "BENCH_PG_DSN": args.dsn}
    load = os.getloadavg()[0]
    with (workdir / "child.out").open("wb") as out, (workdir / "child.err").open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=workdir)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("sluiceway failed:\n" + (workdir / "child.err").read_text()[-4000:])
    report = json.loads((workdir / "child.out").read_text().strip().splitlines()[-1])
    print(f"  sluiceway stages (s): {report['stages']}", flush=True)
    return Measurement(
        SLUICE,
        report["seconds"],
        report["rows"],
        usage.ru_maxrss / 1024,
        load,
    )


def timed_run(workdir: Path, day: date) -> tuple[Any, float, dict[str, float]]:
    """Run workdir/pipeline.yaml; return the result, the seconds and seconds per stage (the
    span from each progress event to the next, by the event's stage)."""
    import itertools

    from sluiceway.core.events import Event
    from sluiceway.core.loader import load_spec
    from sluiceway.core.runner import RunOptions, run_pipeline

    marks: list[tuple[float, str]] = []

    def timer(event: Event) -> None:
        stage = event.fields.get("stage") if event.name == "progress" else None
        marks.append((time.perf_counter(), str(stage or f"after {event.name}")))

    started = time.perf_counter()
    options = RunOptions(
        logical_date=day, base_dir=workdir, state_dir=workdir / ".sluice", subscribers=[timer]
    )
    result = run_pipeline(load_spec(workdir / "pipeline.yaml"), options)
    seconds = time.perf_counter() - started
    spans: dict[str, float] = {}
    bounds = [(started, "start"), *marks, (started + seconds, "end")]
    for (at, label), (until, _) in itertools.pairwise(bounds):
        spans[label] = spans.get(label, 0.0) + until - at
    return result, seconds, {k: round(v, 2) for k, v in spans.items() if v >= 0.05}


def child(args: argparse.Namespace) -> None:
    """The measured sluiceway side: load the spec and run it; print seconds and rows."""
    workdir = args.workdir.resolve()
    result, seconds, stages = timed_run(workdir, DAY)
    if not result.ok:
        raise SystemExit(f"run failed: {result.error}")
    from deltalake import DeltaTable

    on_disk = DeltaTable(str(workdir / "lake" / "extract")).to_pyarrow_dataset().count_rows()
    if on_disk != result.accounting.rows_written:
        raise SystemExit(f"{on_disk} rows on disk, {result.accounting.rows_written} written")
    print(json.dumps({"seconds": seconds, "rows": on_disk, "stages": stages}), flush=True)
    os._exit(0)  # see docs/architecture.md, "Process exit"


def median(runs: list[Measurement], role: str) -> Measurement:
    mine = sorted((m for m in runs if m.role == role), key=lambda m: m.seconds)
    return mine[(len(mine) - 1) // 2]


def report(runs: list[Measurement], rows: int) -> None:
    """The median run of each side, rows/s, and the ratios of rates."""
    for m in runs:
        if m.rows != rows:
            raise SystemExit(f"{m.role} moved {m.rows:,} rows, the table holds {rows:,}")
    medians = {role: median(runs, role) for role in dict.fromkeys(m.role for m in runs)}
    print(f"\nrows: {rows:,}   runs per side: {len(runs) // len(medians)} (median)")
    print(f"{'side':<20} {'s':>7} {'rows/s':>11} {'peak RSS MB':>11}")
    for m in medians.values():
        rss = f"{m.peak_rss_mb:,.0f}" if m.peak_rss_mb else "-"
        print(f"{m.role:<20} {m.seconds:>7.2f} {rows / m.seconds:>11,.0f} {rss:>11}")
    ours = medians[SLUICE]
    for role in (PSYCOPG, PSQL):
        if role in medians:
            ratio = medians[role].seconds / ours.seconds
            verdict = "meets" if ratio >= GOAL else "BELOW"
            print(f"sluiceway / {role} (rates): {ratio:.2f}x ({verdict} the {GOAL}x goal)")
    print(
        "all runs (s / load average before): "
        + ", ".join(f"{m.role} {m.seconds:.2f}/{m.load_before:.1f}" for m in runs)
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child(args)
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    table = table_name(args)
    with psycopg.connect(args.dsn, autocommit=True) as conn:
        filled = ensure_table(conn, table, args.rows)
        size = conn.execute("SELECT pg_size_pretty(pg_table_size(%s))", (table,)).fetchone()
    note = f"filled in {filled:.1f}s, not measured" if filled else "reused"
    print(f"table {table}: {args.rows:,} rows, {size[0] if size else '?'} ({note})", flush=True)
    runs: list[Measurement] = []
    for attempt in range(1, args.repeat + 1):
        sides = [lambda: copy_floor(args.dsn, table), lambda: run_sluiceway(args)]
        if shutil.which("psql"):
            sides.insert(1, lambda: psql_floor(args.dsn, table, args.rows))
        for side in sides:
            runs.append(side())
            print(f"run {attempt} {runs[-1].role}: {runs[-1].seconds:.2f}s", flush=True)
    report(runs, args.rows)


if __name__ == "__main__":
    main()
