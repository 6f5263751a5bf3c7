"""Benchmark: the clickstream_batch example pipeline against a hand-written DuckDB SQL reference.

Generates the clickstream sample once, then runs, each in a fresh subprocess so that peak
memory is that process's own: sluiceway (contract → dedup → mask → 3 checks → Delta
partitioned by event_date, plus its Delta dead-letter table) and one DuckDB SQL script that
does the same work into partitioned Parquet (plus a Parquet dead-letter file). Prints both
times, rows/s, peak RSS and the ratio sluiceway/reference.

    .venv/bin/python bench/clickstream_batch.py --rows 5000000 --repeat 3
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SPEC = REPO / "examples" / "clickstream_batch" / "pipeline.yaml"
DAY = date(2025, 1, 15)
GOAL = 1.3
ROLES = ("sluiceway", "reference")

SLUICE_LAKE = "lake/silver/clickstream"
SLUICE_DEAD_LETTER = "lake/dead_letter"
REF_OUT = "ref_out"
REF_DEAD_LETTER = "ref_dead_letter.parquet"
BENCH_CHECKS = [
    {"expect_column_values_to_not_be_null": {"column": "user_id"}},
    {"expect_column_values_to_be_unique": {"column": "event_id"}},
    {"expect_table_row_count_to_be_between": {"min_value": 1}},
]
BENCH_STEPS = [
    {"dedup": {"keys": ["event_id"], "order_by": "timestamp", "keep": "first"}},
    {"sql": "SELECT *, CAST(timestamp AS DATE) AS event_date FROM input"},
]

EVENT_TYPES = ("page_view", "add_to_cart", "purchase", "search")
USER_ID_RE = "u[0-9]+"
EMAIL_RE = (
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+"
)
OCTET_RE = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_RE = rf"(?:{OCTET_RE}\.){{3}}{OCTET_RE}"
IPV6_RE = (
    r"(?:(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}|(?:[0-9A-Fa-f]{1,4}:){1,7}:|"
    r"(?:[0-9A-Fa-f]{1,4}:){1,6}:[0-9A-Fa-f]{1,4}|"
    r"(?:[0-9A-Fa-f]{1,4}:){1,5}(?::[0-9A-Fa-f]{1,4}){1,2}|"
    r"(?:[0-9A-Fa-f]{1,4}:){1,4}(?::[0-9A-Fa-f]{1,4}){1,3}|"
    r"(?:[0-9A-Fa-f]{1,4}:){1,3}(?::[0-9A-Fa-f]{1,4}){1,4}|"
    r"(?:[0-9A-Fa-f]{1,4}:){1,2}(?::[0-9A-Fa-f]{1,4}){1,5}|"
    r"[0-9A-Fa-f]{1,4}:(?::[0-9A-Fa-f]{1,4}){1,6}|"
    r":(?:(?::[0-9A-Fa-f]{1,4}){1,7}|:))"
)
ISO_TIMESTAMP_RE = (
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?"
)
URL_RE = r"https?://[^\s/$.?#].[^\s]*"
HMAC_BLOCK = 64


@dataclass
class Measurement:
    """One measured run of one side, as reported by its subprocess and by wait4."""

    role: str
    seconds: float
    wall_seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    load_before: float
    rows_in: int
    rows_written: int
    rows_rejected: int
    rows_deduplicated: int
    stages: dict[str, float] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; --child is internal (the measured subprocesses)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows to generate")
    parser.add_argument("--files", type=int, default=8, help="CSV files to split them into")
    parser.add_argument(
        "--workdir", type=Path, default=REPO / "bench" / "out", help="where data and outputs go"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side (median reported)")
    parser.add_argument("--keep", action="store_true", help="keep data and outputs afterwards")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also compare the two outputs row by row (outside the timings)",
    )
    parser.add_argument("--child", choices=ROLES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 1 or args.files < 1 or args.repeat < 1:
        parser.error("--rows, --files and --repeat must be at least 1")
    return args


def bench_keys() -> dict[str, str]:
    """The masking keys both sides get: the demo's (from the environment, else fresh)."""
    from sluiceway.demo.run import demo_keys

    return demo_keys()


def generate(workdir: Path, rows: int, files: int) -> tuple[int, float]:
    """Write the sample CSVs into workdir/data; return the record count and the seconds taken."""
    from sluiceway.demo.clickstream import generate_clickstream

    shutil.rmtree(workdir / "data", ignore_errors=True)
    started = time.perf_counter()
    sample = generate_clickstream(workdir / "data", rows=rows, files=files, with_broken_lines=True)
    seconds = time.perf_counter() - started
    os.sync()
    return sample.rows, seconds


def bench_spec(example: dict[str, Any]) -> dict[str, Any]:
    """The example spec cut to the issue's shape: no products join, exactly three checks."""
    spec = dict(example)
    spec["pipeline"] = "clickstream_batch_bench"
    spec["sources"] = {"events": example["sources"]["events"]}
    spec["steps"] = BENCH_STEPS
    spec["pii"] = {"email": "hmac", "ip_address": "truncate_ip"}
    spec["checks"] = BENCH_CHECKS
    spec["sinks"] = [{**example["sinks"][0], "path": SLUICE_LAKE, "partition_by": ["event_date"]}]
    spec["dead_letter"] = {"path": SLUICE_DEAD_LETTER}
    return spec


def write_bench_spec(workdir: Path) -> Path:
    """Write the bench spec next to the data; return its path."""
    import yaml

    example = yaml.safe_load(EXAMPLE_SPEC.read_text(encoding="utf-8"))
    path = workdir / "pipeline.yaml"
    path.write_text(yaml.safe_dump(bench_spec(example), sort_keys=False), encoding="utf-8")
    return path


OUTPUTS = {"sluiceway": ("lake", ".sluice"), "reference": (REF_OUT, REF_DEAD_LETTER)}
INPUTS = ("data", "pipeline.yaml", *(f"{role}.{std}" for role in ROLES for std in ("out", "err")))


def remove(workdir: Path, names: tuple[str, ...]) -> None:
    """Delete these files or folders of the workdir, if present."""
    for name in names:
        path = workdir / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def run_child(role: str, workdir: Path, env: dict[str, str]) -> Measurement:
    """Run one side in a fresh subprocess; its peak RSS comes from wait4 on that process."""
    remove(workdir, OUTPUTS[role])
    out_path, err_path = workdir / f"{role}.out", workdir / f"{role}.err"
    script = str(Path(__file__).resolve())
    command = [sys.executable, script, "--child", role, "--workdir", str(workdir)]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=workdir)
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"{role} failed (exit {code}):\n{err_path.read_text()[-4000:]}")
    report = json.loads(out_path.read_text().strip().splitlines()[-1])
    return Measurement(
        role=role,
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=usage.ru_maxrss / 1024,
        load_before=load,
        **report,
    )


def child_sluiceway(workdir: Path) -> dict[str, Any]:
    """The measured work of the sluiceway side: load the spec and run the pipeline."""
    from sluiceway.core.events import Event
    from sluiceway.core.loader import load_spec
    from sluiceway.core.runner import RunOptions, run_pipeline

    marks: list[tuple[float, str]] = []

    def timer(event: Event) -> None:
        stage = event.fields.get("stage") if event.name == "progress" else None
        marks.append((time.perf_counter(), str(stage or f"after {event.name}")))

    started = time.perf_counter()
    options = RunOptions(
        logical_date=DAY, base_dir=workdir, state_dir=workdir / ".sluice", subscribers=[timer]
    )
    result = run_pipeline(load_spec(workdir / "pipeline.yaml"), options)
    seconds = time.perf_counter() - started
    if not result.ok:
        raise SystemExit(f"sluiceway run failed: {result.error}")
    acc = result.accounting
    return {
        "seconds": seconds,
        "rows_in": acc.rows_in,
        "rows_written": acc.rows_written,
        "rows_rejected": acc.rows_rejected,
        "rows_deduplicated": acc.rows_deduplicated,
        "stages": stage_durations([(started, "start"), *marks], started + seconds),
    }


def stage_durations(marks: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds from each mark to the next, by the label of the mark that opened the span."""
    spans: dict[str, float] = {}
    bounds = [*marks, (end, "end")]
    for (at, label), (until, _) in itertools.pairwise(bounds):
        spans[label] = spans.get(label, 0.0) + until - at
    return spans


def hmac_pads(key: bytes) -> tuple[bytes, bytes]:
    """(key ^ ipad, key ^ opad) of HMAC-SHA256 (RFC 2104), for HMAC in SQL.

    Written out here rather than imported: the reference must not depend on sluiceway's code
    (it checks sluiceway's HMAC independently) nor load its modules into the measured child.
    """
    import hashlib

    if len(key) > HMAC_BLOCK:
        key = hashlib.sha256(key).digest()
    block = key.ljust(HMAC_BLOCK, b"\x00")
    return bytes(b ^ 0x36 for b in block), bytes(b ^ 0x5C for b in block)


def sql_text(value: str) -> str:
    """A DuckDB string literal."""
    return "'" + value.replace("'", "''") + "'"


REFERENCE_SQL = """
SET TimeZone = 'UTC';
CREATE MACRO hmac_sha256(v) AS sha256({outer_pad} || unhex(sha256({inner_pad} || encode(v))));
CREATE MACRO hextets(s) AS CASE WHEN s = '' THEN []::VARCHAR[] ELSE string_split(s, ':') END;
CREATE MACRO ipv6_groups(ip) AS CASE
    WHEN contains(ip, '::') THEN list_concat(
        hextets(split_part(ip, '::', 1)),
        list_transform(
            range(8 - len(hextets(split_part(ip, '::', 1))) - len(hextets(split_part(ip, '::', 2)))),
            lambda x: '0'),
        hextets(split_part(ip, '::', 2)))
    ELSE string_split(ip, ':') END;
CREATE MACRO ipv6_48(ip) AS regexp_replace(
    array_to_string(list_transform(ipv6_groups(ip)[1:3],
                                   lambda g: coalesce(nullif(ltrim(lower(g), '0'), ''), '0')), ':'),
    '^0(:0)*$|(:0)+$', '') || '::';
CREATE MACRO truncate_ip(v) AS CASE
    WHEN regexp_full_match(v, {ipv4}) THEN regexp_replace(v, '[0-9]+$', '0')
    WHEN contains(v, ':') THEN ipv6_48(v) END;
CREATE TEMP TABLE typed AS
SELECT *, {reason} AS reason
FROM (
    SELECT *, TRY_CAST(timestamp AS TIMESTAMPTZ) AS ts, TRY_CAST(product_price AS DOUBLE) AS price
    FROM read_csv({events}, all_varchar = true, header = true, strict_mode = true,
                  null_padding = false, filename = true, store_rejects = true,
                  rejects_table = 'csv_rejects', rejects_scan = 'csv_scans'));
COPY (
    SELECT s.file_path AS file, r.line, 'parse' AS stage,
           string_agg(DISTINCT r.error_message, '; ') AS reason, NULL::VARCHAR AS payload
    FROM csv_rejects r JOIN csv_scans s USING (scan_id, file_id)
    GROUP BY ALL
    UNION ALL
    SELECT filename, NULL, 'contract', reason,
           to_json(struct_pack(event_id, user_id, session_id, event_type, timestamp, product_id,
                               product_price, email := hmac_sha256(email),
                               ip_address := truncate_ip(ip_address), user_agent,
                               page_url))::VARCHAR
    FROM typed WHERE reason <> ''
) TO {dead_letter} (FORMAT parquet, COMPRESSION zstd);
CREATE TEMP TABLE result AS
SELECT event_id, user_id, session_id, event_type, ts AS timestamp, product_id,
       price AS product_price, hmac_sha256(email) AS email, truncate_ip(ip_address) AS ip_address,
       user_agent, page_url, CAST(ts AS DATE) AS event_date
FROM typed
WHERE reason = ''
QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY ts) = 1;
SELECT count(*), count(*) - count(user_id), count(event_id) - count(DISTINCT event_id)
FROM result;
COPY result TO {out} (FORMAT parquet, PARTITION_BY (event_date), COMPRESSION zstd);
SELECT (SELECT count(*) FROM typed),
       (SELECT count(*) FROM typed WHERE reason <> ''),
       (SELECT count(*) FROM (SELECT DISTINCT scan_id, file_id, line FROM csv_rejects))
"""


def contract_reason_sql() -> str:
    """Every broken contract rule of a raw row, comma-separated ('' for a valid row)."""
    types = ", ".join(sql_text(t) for t in EVENT_TYPES)
    ip_ok = (
        f"regexp_full_match(ip_address, {sql_text(IPV4_RE)}) OR "
        f"regexp_full_match(ip_address, {sql_text(IPV6_RE)})"
    )
    rules = [
        ("event_id IS NULL", "event_id.not_null"),
        ("user_id IS NULL", "user_id.not_null"),
        (f"NOT regexp_full_match(user_id, {sql_text(USER_ID_RE)})", "user_id.regex"),
        ("event_type IS NULL", "event_type.not_null"),
        (f"event_type NOT IN ({types})", "event_type.values"),
        ("timestamp IS NULL", "timestamp.not_null"),
        ("timestamp IS NOT NULL AND ts IS NULL", "timestamp.type"),
        (
            f"NOT regexp_full_match(timestamp, {sql_text(ISO_TIMESTAMP_RE)}) OR ts IS NULL",
            "timestamp.format",
        ),
        ("product_price IS NOT NULL AND price IS NULL", "product_price.type"),
        ("price < 0", "product_price.min"),
        ("price > 100000", "product_price.max"),
        (f"NOT regexp_full_match(email, {sql_text(EMAIL_RE)})", "email.format"),
        (f"NOT ({ip_ok})", "ip_address.format"),
        (f"NOT regexp_full_match(page_url, {sql_text(URL_RE)})", "page_url.format"),
    ]
    cases = ", ".join(
        f"CASE WHEN coalesce({cond}, false) THEN '{name}' END" for cond, name in rules
    )
    return f"concat_ws(', ', {cases})"


def reference_statements(events_glob: str, hmac_key: bytes) -> list[str]:
    """The reference job, statement by statement; the last three return checks and counts."""
    inner, outer = (f"from_hex('{pad.hex()}')" for pad in hmac_pads(hmac_key))
    script = REFERENCE_SQL.format(
        inner_pad=inner,
        outer_pad=outer,
        ipv4=sql_text(IPV4_RE),
        reason=contract_reason_sql(),
        events=sql_text(events_glob),
        dead_letter=sql_text(REF_DEAD_LETTER),
        out=sql_text(REF_OUT),
    )
    return [statement.strip() for statement in script.split(";\n") if statement.strip()]


def child_reference(workdir: Path) -> dict[str, Any]:
    """The measured work of the reference side: one DuckDB connection running the SQL job."""
    import duckdb

    started = time.perf_counter()
    con = duckdb.connect(":memory:")
    *work, checks, publish, counts = reference_statements(
        "data/events/*.csv", os.environ["SLUICE_HMAC_KEY"].encode()
    )
    for statement in work:
        con.execute(statement)
    rows, null_user_ids, repeated_ids = _one_row(con, checks)
    if null_user_ids or repeated_ids or rows < 1:
        raise SystemExit(f"reference checks failed: {null_user_ids=} {repeated_ids=} {rows=}")
    con.execute(publish)
    parsed, contract_rejects, parse_rejects = _one_row(con, counts)
    con.close()
    return {
        "seconds": time.perf_counter() - started,
        "rows_in": parsed + parse_rejects,
        "rows_written": rows,
        "rows_rejected": contract_rejects + parse_rejects,
        "rows_deduplicated": parsed - contract_rejects - rows,
        "stages": {},
    }


def _one_row(con: Any, sql: str) -> tuple[int, ...]:
    row = con.execute(sql).fetchone()
    assert row is not None, sql
    return tuple(int(value) for value in row)


def written_rows(workdir: Path) -> dict[str, int]:
    """Rows actually on disk: the sluiceway Delta table and the reference Parquet files."""
    import duckdb
    from deltalake import DeltaTable

    delta = DeltaTable(str(workdir / SLUICE_LAKE)).to_pyarrow_dataset().count_rows()
    query = f"SELECT count(*) FROM read_parquet('{workdir / REF_OUT}/**/*.parquet')"
    parquet = duckdb.connect(":memory:").execute(query).fetchone()
    return {"sluiceway": delta, "reference": int(parquet[0]) if parquet else 0}


def compare_outputs(workdir: Path) -> tuple[int, int]:
    """Rows only in the sluiceway table and rows only in the reference output (0, 0 = equal)."""
    import duckdb
    from deltalake import DeltaTable

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    from sluiceway.demo.clickstream import EVENT_COLUMNS

    columns = ", ".join(f'"{c}"' for c in (*EVENT_COLUMNS, "event_date"))
    sluice = DeltaTable(str(workdir / SLUICE_LAKE)).to_pyarrow_dataset()
    con.register("sluice", sluice)
    ref = (
        f"read_parquet('{workdir / REF_OUT}/**/*.parquet', hive_partitioning = true, "
        "hive_types = {'event_date': DATE})"
    )
    only = [
        _one_row(
            con,
            f"SELECT count(*) FROM (SELECT {columns} FROM {a} "
            f"EXCEPT ALL SELECT {columns} FROM {b})",
        )[0]
        for a, b in (("sluice", ref), (ref, "sluice"))
    ]
    return only[0], only[1]


def verify(runs: list[Measurement], on_disk: dict[str, int]) -> None:
    """Fail loudly when the two sides did not write and reject the same rows."""
    by_role = {m.role: m for m in runs}
    fields = ("rows_in", "rows_written", "rows_rejected", "rows_deduplicated")
    ours, ref = by_role["sluiceway"], by_role["reference"]
    table = {f: (getattr(ours, f), getattr(ref, f)) for f in fields}
    table["rows on disk"] = (on_disk["sluiceway"], on_disk["reference"])
    print("\ncounts             sluiceway    reference")
    for name, (mine, theirs) in table.items():
        print(f"  {name:<16} {mine:>10,} {theirs:>12,}")
    mismatched = [name for name, (mine, theirs) in table.items() if mine != theirs]
    if mismatched:
        raise SystemExit(f"the two sides disagree on: {', '.join(mismatched)}")


def median_of(runs: list[Measurement], role: str) -> Measurement:
    """The run of `role` with the median time (the lower middle one for an even count)."""
    mine = sorted((m for m in runs if m.role == role), key=lambda m: m.seconds)
    return mine[(len(mine) - 1) // 2]


def report(runs: list[Measurement], rows: int) -> None:
    """Print the figures of the median runs and the ratio."""
    ours, ref = median_of(runs, "sluiceway"), median_of(runs, "reference")
    print(f"\nrows: {rows:,}   runs per side: {len(runs) // 2} (median by work time)")
    print(
        f"{'side':<10} {'work s':>7} {'process s':>9} {'CPU s':>7} {'rows/s':>9} {'peak RSS MB':>11}"
    )
    for m in (ours, ref):
        print(
            f"{m.role:<10} {m.seconds:>7.2f} {m.wall_seconds:>9.2f} {m.cpu_seconds:>7.2f} "
            f"{rows / m.seconds:>9,.0f} {m.peak_rss_mb:>11,.0f}"
        )
    ratio = ours.seconds / ref.seconds
    verdict = "within" if ratio <= GOAL else "ABOVE"
    print(
        f"ratio sluiceway/reference: {ratio:.2f}x work ({verdict} the {GOAL}x goal), "
        f"{ours.wall_seconds / ref.wall_seconds:.2f}x process, "
        f"{ours.cpu_seconds / ref.cpu_seconds:.2f}x CPU, "
        f"{ours.peak_rss_mb / ref.peak_rss_mb:.2f}x peak memory"
    )
    for role in ROLES:
        mine = [m for m in runs if m.role == role]
        print(
            f"all {role} runs (work s / load average before): "
            + ", ".join(f"{m.seconds:.2f}/{m.load_before:.1f}" for m in mine)
        )
    spans = {k: v for k, v in ours.stages.items() if v >= 0.05}
    print("sluiceway stages (s): " + ", ".join(f"{k}: {v:.2f}" for k, v in spans.items()))


def run_bench(args: argparse.Namespace) -> None:
    """Generate, run both sides --repeat times alternating, verify, report."""
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    rows, generate_s = generate(workdir, args.rows, args.files)
    print(f"generated {rows:,} rows in {args.files} CSV files in {generate_s:.1f}s (not measured)")
    write_bench_spec(workdir)
    env = {**os.environ, **bench_keys()}
    runs: list[Measurement] = []
    for attempt in range(1, args.repeat + 1):
        for role in ROLES:
            runs.append(run_child(role, workdir, env))
            print(
                f"run {attempt} {role}: {runs[-1].seconds:.2f}s, "
                f"peak {runs[-1].peak_rss_mb:,.0f} MB",
                flush=True,
            )
    verify(runs[-2:], written_rows(workdir))
    if args.compare:
        only_ours, only_ref = compare_outputs(workdir)
        print(f"row by row: {only_ours} row(s) only in sluiceway, {only_ref} only in the reference")
        if only_ours or only_ref:
            raise SystemExit("the outputs differ")
    report(runs, rows)
    if not args.keep:
        remove(workdir, (*INPUTS, *OUTPUTS["sluiceway"], *OUTPUTS["reference"]))
        with contextlib.suppress(OSError):
            workdir.rmdir()


def main(argv: list[str] | None = None) -> None:
    """Entry point: the benchmark, or one measured side when called with --child."""
    args = parse_args(argv)
    if args.child is None:
        run_bench(args)
        return
    workdir = args.workdir.resolve()
    work = child_sluiceway if args.child == "sluiceway" else child_reference
    print(json.dumps(work(workdir)))


if __name__ == "__main__":
    main()
