"""Benchmark: the churn_features example end to end against hand-written DuckDB SQL.

Generates the example's data once (customers and transactions in PostgreSQL, the NDJSON
behaviour export, the tickets CSV) and exports the same inputs to Parquet (neither is
measured). Then, each in a fresh subprocess: sluiceway runs the example's spec unchanged
(PostgreSQL extract, four contracts, features, HMAC of the email, five checks, Delta
partitioned by feature_date, dead letters); the reference is one DuckDB SQL job over the
Parquet exports computing the same features (same validity rules, same HMAC, same checks)
into partitioned Parquet. Prints both times, the ratio (goal: at most 1.5×) and verifies
that the two outputs hold the same rows. In the same runs it times the floor of the
example's extract: `psql` copying the two PostgreSQL tables out in binary into /dev/null
(no Python, nothing kept), which bounds what any reader of those tables can do.

    .venv/bin/python bench/churn.py --customers 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "churn_features"
DAY = date(2025, 1, 31)
GOAL = 1.5
ROLES = ("sluiceway", "reference", "sluiceway-parquet")
SPECS = {"sluiceway": "pipeline.yaml", "sluiceway-parquet": "pipeline_parquet.yaml"}
LAKES = {"sluiceway": "lake", "sluiceway-parquet": "lake_parquet"}
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLE = "gold/churn_features"
REF_OUT = "ref_out"
HMAC_BLOCK = 64
FEATURES = (
    "user_id",
    "email",
    "country",
    "total_spend_30d",
    "transaction_count_30d",
    "avg_transaction_value",
    "days_since_last_login",
    "page_views_30d",
    "ticket_count_90d",
    "avg_resolution_time_days",
    "feature_date",
)


@dataclass
class Measurement:
    """One measured run of one side, as reported by its subprocess and by wait4."""

    role: str
    seconds: float
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    load_before: float
    rows_written: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --child is internal (the measured subprocesses)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=1_000_000, help="customers (1M)")
    parser.add_argument("--seed", type=int, default=7, help="generator seed (7)")
    parser.add_argument("--dsn", default=os.environ.get("BENCH_PG_DSN", DEFAULT_DSN))
    parser.add_argument("--schema", default="churn_bench", help="PostgreSQL schema (churn_bench)")
    parser.add_argument(
        "--workdir", type=Path, default=Path("/tmp/sluice-bench/churn"), help="data and outputs"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per side (median reported)")
    parser.add_argument("--child", choices=ROLES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.customers < 1000 or args.repeat < 1:
        parser.error("--customers must be at least 1000 and --repeat at least 1")
    return args


# --- data (not measured) --------------------------------------------------------------------


def tables_exist(dsn: str, schema: str) -> bool:
    """Whether <schema>.customers and <schema>.transactions are there."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL",
            (f"{schema}.customers", f"{schema}.transactions"),
        ).fetchone()
    return bool(row and row[0])


def ensure_data(args: argparse.Namespace) -> None:
    """Generate the example's data unless the workdir and the schema already hold this size
    and seed."""
    marker = args.workdir / "generated.json"
    wanted = {"customers": args.customers, "seed": args.seed, "schema": args.schema}
    is_marked = marker.exists() and json.loads(marker.read_text()) == wanted
    if is_marked and tables_exist(args.dsn, args.schema):
        print(
            f"data: reusing {args.workdir / 'data'} and {args.schema}.* (delete "
            f"{marker} to regenerate)",
            flush=True,
        )
        return
    spec = importlib.util.spec_from_file_location("churn_generate", EXAMPLE / "generate.py")
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = generator
    spec.loader.exec_module(generator)
    started = time.perf_counter()
    generator.main(
        [
            "--customers",
            str(args.customers),
            "--seed",
            str(args.seed),
            "--dsn",
            args.dsn,
            "--schema",
            args.schema,
            "--out",
            str(args.workdir),
        ]
    )
    print(f"generated in {time.perf_counter() - started:.1f}s (not measured)", flush=True)
    marker.write_text(json.dumps(wanted))


EXPORT_FILES = {
    "behaviour": """COPY (
        SELECT session_id, TRY_CAST(user_id AS BIGINT) AS user_id,
               TRY_CAST(login_at AS TIMESTAMPTZ) AS login_at,
               TRY_CAST(page_views AS INTEGER) AS page_views, device
        FROM read_json('data/behaviour/*.ndjson', format = 'newline_delimited',
                       ignore_errors = true,
                       columns = {session_id: 'VARCHAR', user_id: 'VARCHAR',
                                  login_at: 'VARCHAR', page_views: 'VARCHAR', device: 'VARCHAR'})
    ) TO 'parquet/behaviour.parquet' (FORMAT parquet, COMPRESSION zstd)""",
    "tickets": """COPY (
        SELECT ticket_id, TRY_CAST(user_id AS BIGINT) AS user_id,
               TRY_CAST(opened_at AS TIMESTAMPTZ) AS opened_at,
               TRY_CAST(resolved_at AS TIMESTAMPTZ) AS resolved_at, category, channel
        FROM read_csv('data/tickets/*.csv', all_varchar = true, header = true,
                      ignore_errors = true, strict_mode = true, null_padding = false)
    ) TO 'parquet/tickets.parquet' (FORMAT parquet, COMPRESSION zstd)""",
}


def exported_schema(schema: Any) -> Any:
    """The driver's schema with `amount` (numeric(12, 2), which ADBC hands over as text)
    as decimal128(12, 2), the type the postgres source gives it."""
    import pyarrow as pa

    fields = [pa.field(f.name, pa.decimal128(12, 2)) if f.name == "amount" else f for f in schema]
    return pa.schema(fields)


def export_parquet(args: argparse.Namespace) -> tuple[float, float]:
    """The four inputs as typed Parquet in workdir/parquet; return the seconds taken by the
    two PostgreSQL tables and by the two files."""
    import adbc_driver_postgresql.dbapi as adbc
    import duckdb
    import pyarrow.parquet as pq

    started = time.perf_counter()
    out = args.workdir / "parquet"
    out.mkdir(exist_ok=True)
    with adbc.connect(args.dsn) as conn, conn.cursor() as cur:
        for table in ("customers", "transactions"):
            cur.execute(f"SELECT * FROM {args.schema}.{table}")
            reader = cur.fetch_record_batch()
            schema = exported_schema(reader.schema)
            with pq.ParquetWriter(out / f"{table}.parquet", schema, compression="zstd") as writer:
                for batch in reader:
                    writer.write_batch(batch.cast(schema))
    tables_done = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    os.chdir(args.workdir)
    for statement in EXPORT_FILES.values():
        con.execute(statement)
    os.chdir(REPO)
    return tables_done - started, time.perf_counter() - tables_done


def typed_contract(contract: dict[str, Any]) -> dict[str, Any]:
    """The contract without `format` on timestamp columns: the Parquet exports hold them
    typed, and the text pattern of `iso_timestamp` does not match DuckDB's rendering of a
    TIMESTAMPTZ (`+00`), so it would reject every row."""
    columns = {
        name: {
            k: v for k, v in rules.items() if not (k == "format" and rules["type"] == "timestamp")
        }
        for name, rules in contract["columns"].items()
    }
    return {**contract, "columns": columns}


def write_parquet_spec(workdir: Path) -> None:
    """The example's spec with its four sources read from the Parquet exports instead (same
    contracts, steps, masking, checks and sink), into a lake of its own."""
    import yaml

    spec = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text(encoding="utf-8"))
    spec["sources"] = {
        name: {
            "type": "files",
            "path": f"parquet/{name}.parquet",
            "format": "parquet",
            "contract": typed_contract(source["contract"]),
        }
        for name, source in spec["sources"].items()
    }
    lake = LAKES["sluiceway-parquet"]
    spec["sinks"][0]["path"] = f"{lake}/{TABLE}"
    spec["dead_letter"]["path"] = f"{lake}/dead_letter"
    text = yaml.safe_dump(spec, sort_keys=False)
    (workdir / SPECS["sluiceway-parquet"]).write_text(text, encoding="utf-8")


# --- the measured sides ---------------------------------------------------------------------


def timed_run(workdir: Path, spec: str, day: date) -> tuple[Any, float, dict[str, float]]:
    """Run workdir/<spec>; return the result, the seconds and seconds per stage (the
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
    result = run_pipeline(load_spec(workdir / spec), options)
    seconds = time.perf_counter() - started
    spans: dict[str, float] = {}
    bounds = [(started, "start"), *marks, (started + seconds, "end")]
    for (at, label), (until, _) in itertools.pairwise(bounds):
        spans[label] = spans.get(label, 0.0) + until - at
    return result, seconds, {k: round(v, 2) for k, v in spans.items() if v >= 0.05}


def child_sluiceway(workdir: Path, spec: str) -> dict[str, Any]:
    """Run the example's spec (copied unchanged next to the data) or its Parquet variant."""
    result, seconds, stages = timed_run(workdir, spec, DAY)
    if not result.ok:
        raise SystemExit(f"sluiceway run failed: {result.error}")
    return {"seconds": seconds, "rows_written": result.accounting.rows_written, "stages": stages}


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """(key ^ ipad, key ^ opad) of HMAC-SHA256 (RFC 2104), for HMAC in SQL (written out, not
    imported, so the reference checks sluiceway's HMAC independently)."""
    if len(key) > HMAC_BLOCK:
        key = hashlib.sha256(key).digest()
    block = key.ljust(HMAC_BLOCK, b"\x00")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


REFERENCE_SQL = """
SET TimeZone = 'UTC';
CREATE MACRO hmac_sha256(v) AS sha256({outer_pad} || unhex(sha256({inner_pad} || encode(v))));
CREATE TEMP TABLE result AS
WITH customers AS (
    SELECT user_id, email, country FROM 'parquet/customers.parquet'
    WHERE user_id IS NOT NULL AND regexp_full_match(email, {email_re})
), spend AS (
    SELECT user_id,
           sum(amount) FILTER (WHERE created_at >= TIMESTAMPTZ '{start30}') AS total_spend_30d,
           count(*) FILTER (WHERE created_at >= TIMESTAMPTZ '{start30}') AS transaction_count_30d,
           avg(amount) AS avg_transaction_value
    FROM 'parquet/transactions.parquet'
    WHERE user_id IS NOT NULL AND amount >= 0 AND transaction_id IS NOT NULL
      AND created_at < TIMESTAMPTZ '{end}'
    GROUP BY user_id
), sessions AS (
    SELECT user_id, max(login_at) AS last_login_at,
           sum(page_views) FILTER (WHERE login_at >= TIMESTAMPTZ '{start30}') AS page_views_30d
    FROM 'parquet/behaviour.parquet'
    WHERE session_id IS NOT NULL AND user_id IS NOT NULL AND page_views >= 0
      AND (device IS NULL OR device IN ('web', 'ios', 'android')) AND login_at < TIMESTAMPTZ '{end}'
    GROUP BY user_id
), support AS (
    SELECT user_id, count(*) AS ticket_count_90d,
           avg(epoch(resolved_at - opened_at) / 86400.0)
               FILTER (WHERE resolved_at < TIMESTAMPTZ '{end}') AS avg_resolution_time_days
    FROM 'parquet/tickets.parquet'
    WHERE ticket_id IS NOT NULL AND user_id IS NOT NULL
      AND (category IS NULL OR category IN ('billing', 'delivery', 'account', 'product', 'other'))
      AND (channel IS NULL OR channel IN ('email', 'chat', 'phone'))
      AND opened_at >= TIMESTAMPTZ '{start90}' AND opened_at < TIMESTAMPTZ '{end}'
    GROUP BY user_id
)
SELECT c.user_id, hmac_sha256(c.email) AS email, c.country,
       CAST(coalesce(total_spend_30d, 0) AS DECIMAL(14, 2)) AS total_spend_30d,
       coalesce(transaction_count_30d, 0) AS transaction_count_30d, avg_transaction_value,
       DATE '{day}' - CAST(last_login_at AS DATE) AS days_since_last_login,
       CAST(coalesce(page_views_30d, 0) AS BIGINT) AS page_views_30d,
       coalesce(ticket_count_90d, 0) AS ticket_count_90d, avg_resolution_time_days,
       DATE '{day}' AS feature_date
FROM customers c
LEFT JOIN spend USING (user_id) LEFT JOIN sessions USING (user_id)
LEFT JOIN support USING (user_id);
SELECT count(*), count(*) - count(user_id), count(user_id) - count(DISTINCT user_id),
       count(*) FILTER (WHERE total_spend_30d NOT BETWEEN 0 AND 1000000),
       count(*) FILTER (WHERE days_since_last_login NOT BETWEEN 0 AND 365)
FROM result;
COPY result TO '{out}' (FORMAT parquet, PARTITION_BY (feature_date), COMPRESSION zstd,
                        OVERWRITE_OR_IGNORE)
"""
EMAIL_RE = (
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)


def reference_statements(hmac_key: bytes) -> list[str]:
    """The reference job, statement by statement; the second to last returns the checks."""
    from datetime import timedelta

    inner, outer = (f"from_hex('{pad.hex()}')" for pad in hmac_pads(hmac_key))
    end = DAY + timedelta(days=1)
    script = REFERENCE_SQL.format(
        inner_pad=inner,
        outer_pad=outer,
        email_re="'" + EMAIL_RE.replace("'", "''") + "'",
        day=DAY,
        end=f"{end} 00:00:00+00",
        start30=f"{end - timedelta(days=30)} 00:00:00+00",
        start90=f"{end - timedelta(days=90)} 00:00:00+00",
        out=REF_OUT,
    )
    return [s.strip() for s in script.split(";\n") if s.strip()]


def child_reference(workdir: Path) -> dict[str, Any]:
    """One DuckDB connection running the SQL job over the Parquet exports."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(":memory:")
    *work, checks, publish = reference_statements(os.environ["SLUICE_HMAC_KEY"].encode())
    for statement in work:
        con.execute(statement)
    row = con.execute(checks).fetchone()
    assert row is not None
    rows, *failures = row
    if any(failures) or not 1000 <= rows <= 10_000_000:
        raise SystemExit(f"reference checks failed: {row}")
    con.execute(publish)
    con.close()
    return {"seconds": time.perf_counter() - started, "rows_written": int(rows)}


# --- driving and verifying ------------------------------------------------------------------


def run_child(role: str, args: argparse.Namespace, env: dict[str, str]) -> Measurement:
    """Run one side in a fresh subprocess; peak RSS and CPU from wait4 on that process."""
    workdir = args.workdir.resolve()
    for name in (LAKES[role], ".sluice") if role in LAKES else (REF_OUT,):
        shutil.rmtree(workdir / name, ignore_errors=True)
    out_path, err_path = workdir / f"{role}.out", workdir / f"{role}.err"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        role,
        "--workdir",
        str(workdir),
    ]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=workdir)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{role} failed:\n{err_path.read_text()[-4000:]}")
    report = json.loads(out_path.read_text().strip().splitlines()[-1])
    if report.get("stages"):
        print(f"  {role} stages (s): {report['stages']}", flush=True)
    return Measurement(
        role,
        report["seconds"],
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,
        load,
        report["rows_written"],
    )


def compare_outputs(workdir: Path, lake: str) -> tuple[int, int, int]:
    """Rows in the Delta table of `lake`, rows only there, rows only in the reference (doubles are
    compared to 9 significant digits: parallel sums may differ in the last bits)."""
    import duckdb
    from deltalake import DeltaTable

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    con.register("sluice", DeltaTable(str(workdir / lake / TABLE)).to_pyarrow_dataset())
    ref = (
        f"read_parquet('{workdir / REF_OUT}/**/*.parquet', hive_partitioning = true, "
        "hive_types = {'feature_date': DATE})"
    )
    doubles = {"avg_transaction_value", "avg_resolution_time_days"}
    columns = ", ".join(
        f"round({c}, 9 - CAST(ceil(log10(abs({c}) + 1e-300)) AS INTEGER)) AS {c}"
        if c in doubles
        else c
        for c in FEATURES
    )
    count = con.execute("SELECT count(*) FROM sluice").fetchone()
    only = [
        con.execute(
            f"SELECT count(*) FROM (SELECT {columns} FROM {a} EXCEPT ALL SELECT {columns} FROM {b})"
        ).fetchone()
        for a, b in (("sluice", ref), (ref, "sluice"))
    ]
    return int(count[0]) if count else 0, int(only[0][0]), int(only[1][0])  # type: ignore[index]


def extract_floor(args: argparse.Namespace) -> float:
    """Seconds `psql` takes to COPY the example's two PostgreSQL tables out in binary into
    /dev/null: what reading them costs before any client does anything with the rows."""
    started = time.perf_counter()
    for table in ("customers", "transactions"):
        subprocess.run(
            [
                "psql",
                args.dsn,
                "-qAt",
                "-c",
                f"COPY {args.schema}.{table} TO STDOUT (FORMAT binary)",
            ],
            stdout=subprocess.DEVNULL,
            check=True,
        )
    return time.perf_counter() - started


def median_of(runs: list[Measurement], role: str) -> Measurement:
    mine = sorted((m for m in runs if m.role == role), key=lambda m: m.seconds)
    return mine[(len(mine) - 1) // 2]


def report(
    runs: list[Measurement], customers: int, export: tuple[float, float], floors: list[float]
) -> None:
    """Print the figures of the median runs and the ratios."""
    ours, ref = median_of(runs, "sluiceway"), median_of(runs, "reference")
    on_parquet = median_of(runs, "sluiceway-parquet")
    print(
        f"\ncustomers: {customers:,}   runs per side: {len(runs) // len(ROLES)} "
        "(median by work time)"
    )
    print(f"{'side':<17} {'work s':>7} {'process s':>9} {'CPU s':>7} {'peak RSS MB':>11}")
    for m in (ours, ref, on_parquet):
        print(
            f"{m.role:<17} {m.seconds:>7.2f} {m.wall_seconds:>9.2f} {m.cpu_seconds:>7.2f} "
            f"{m.peak_rss_mb:>11,.0f}"
        )
    ratio = ours.seconds / ref.seconds
    verdict = "within" if ratio <= GOAL else "ABOVE"
    print(
        f"ratio sluiceway/reference: {ratio:.2f}x work ({verdict} the {GOAL}x goal), "
        f"{ours.wall_seconds / ref.wall_seconds:.2f}x process, "
        f"{ours.cpu_seconds / ref.cpu_seconds:.2f}x CPU"
    )
    print(
        f"ratio sluiceway on the Parquet exports/reference: {on_parquet.seconds / ref.seconds:.2f}x"
    )
    floor = sorted(floors)[(len(floors) - 1) // 2]
    bound = floor / ref.seconds
    print(
        f"extract floor (psql binary COPY of customers and transactions into /dev/null): "
        f"{floor:.2f}s median ({', '.join(f'{f:.2f}' for f in floors)}); floor/reference: "
        f"{bound:.2f}x"
        + (f", above the {GOAL}x goal before any row is used" if bound > GOAL else "")
    )
    all_in = ref.seconds + sum(export)
    print(
        f"reference + its export (PostgreSQL {export[0]:.2f}s, files {export[1]:.2f}s, timed "
        f"once): {all_in:.2f}s; sluiceway / that: {ours.seconds / all_in:.2f}x"
    )
    for role in ROLES:
        print(
            f"all {role} runs (work s / load average before): "
            + ", ".join(f"{m.seconds:.2f}/{m.load_before:.1f}" for m in runs if m.role == role)
        )


def run_bench(args: argparse.Namespace) -> None:
    """Generate and export once, run both sides --repeat times alternating, verify, report."""
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    ensure_data(args)
    export = export_parquet(args)
    print(f"exported the inputs to Parquet in {sum(export):.1f}s (not measured)", flush=True)
    shutil.copy(EXAMPLE / "pipeline.yaml", args.workdir / SPECS["sluiceway"])
    write_parquet_spec(args.workdir)
    env = {
        **os.environ,
        "CHURN_PG_SCHEMA": args.schema,
        "SLUICE_HMAC_KEY": os.environ.get("SLUICE_HMAC_KEY", secrets.token_hex(16)),
        "SLUICE_ENCRYPTION_KEY": os.environ.get("SLUICE_ENCRYPTION_KEY", secrets.token_hex(32)),
    }
    runs: list[Measurement] = []
    floors: list[float] = []
    for attempt in range(1, args.repeat + 1):
        floors.append(extract_floor(args))
        print(f"run {attempt} extract floor: {floors[-1]:.2f}s", flush=True)
        for role in ROLES:
            runs.append(run_child(role, args, env))
            print(
                f"run {attempt} {role}: {runs[-1].seconds:.2f}s, "
                f"peak {runs[-1].peak_rss_mb:,.0f} MB",
                flush=True,
            )
    for role, lake in LAKES.items():
        rows, only_ours, only_ref = compare_outputs(args.workdir, lake)
        print(
            f"row by row, {role}: {rows:,} rows; {only_ours} only there, {only_ref} only in "
            "the reference"
        )
        if only_ours or only_ref or rows != runs[-1].rows_written:
            raise SystemExit("the outputs differ")
    report(runs, args.customers, export, floors)


def main(argv: list[str] | None = None) -> None:
    """Entry point: the benchmark, or one measured side when called with --child."""
    args = parse_args(argv)
    if args.child is None:
        run_bench(args)
        return
    workdir = args.workdir.resolve()
    is_sluice = args.child in SPECS
    outcome = child_sluiceway(workdir, SPECS[args.child]) if is_sluice else child_reference(workdir)
    print(json.dumps(outcome), flush=True)
    os._exit(0)  # see docs/architecture.md, "Process exit"


if __name__ == "__main__":
    main()
