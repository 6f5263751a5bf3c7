"""Benchmark: ten table checks on a 5M-row clickstream Parquet file, sluiceway against the floor.

Times, in the same run and on the same data, (1) sluiceway's `evaluate_checks` (one fused
aggregate query), (2) the same plus `sample_unexpected` (what a pipeline's audit runs: one
more query per failed column-value check), (3) a hand-written single-pass DuckDB query that
computes the same ten results (the floor), and (4) Great Expectations 1.x on pandas when
`--ge-python` names an interpreter that has it (see bench/setup_ge.sh). Verifies that every
engine finds the failure counts the generator planted, and prints the ratios to the floor.

    .venv/bin/python bench/quality_checks.py --repeat 3 --ge-python /tmp/sluice-bench-ge/bin/python
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GOAL = 1.2
GENERATOR_VERSION = 1
DEFAULT_WORKDIR = Path("/tmp/sluice-bench/quality")
TABLE = "events"
MIN_ROWS = 1_000

EVENT_TYPES = ("page_view", "add_to_cart", "search", "purchase")
EVENT_TYPE_WEIGHTS = (0.60, 0.20, 0.15, 0.05)
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
BAD_TIMESTAMPS = (
    "2025-13-45 99:00:00",
    "yesterday",
    "15/01/2025 10:00",
    "2025-01-15 25:61:00",
    "2025-02-30 10:00:00",
)
BAD_IPS = ("256.1.1.1", "10.0.0", "1.2.3.4.5", "localhost", "2001:db8::1", "192.168.01.x")
USER_AGENTS = ("Mozilla/5.0 (X11; Linux x86_64)", "Mozilla/5.0 (iPhone)", "curl/8.5.0")
DOMAINS = ("example.com", "example.org", "mail.example.net", "shop.example.co.uk")
# Anchored so that Great Expectations (which searches) judges exactly what sluiceway and the
# reference (whole-value match) judge; the syntax is common to RE2 and Python's `re`.
EMAIL_RE = r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
OCTET_RE = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
IPV4_RE = rf"^(?:{OCTET_RE}\.){{3}}{OCTET_RE}$"
MAX_PRICE = 100_000
MEAN_PRICE_BOUNDS = (1.0, 1_000.0)
MIN_NON_NULL_AGENTS = 0.95


@dataclass(frozen=True)
class BenchCheck:
    """One of the ten checks, as sluiceway YAML and as a Great Expectations expectation.

    `reads` is what the engines are compared on: the unexpected count, or the observed value
    for the two checks that have no unexpected rows (row count, mean).
    """

    label: str
    sluiceway: dict[str, Any]
    ge_type: str
    ge_kwargs: dict[str, Any]
    reads: str = "unexpected"


CHECKS = (
    BenchCheck(
        "not_null user_id",
        {"not_null": {"column": "user_id"}},
        "ExpectColumnValuesToNotBeNull",
        {"column": "user_id"},
    ),
    BenchCheck(
        "in_set event_type",
        {"in_set": {"column": "event_type", "value_set": list(EVENT_TYPES)}},
        "ExpectColumnValuesToBeInSet",
        {"column": "event_type", "value_set": list(EVENT_TYPES)},
    ),
    BenchCheck(
        "between product_price",
        {"between": {"column": "product_price", "min_value": 0, "max_value": MAX_PRICE}},
        "ExpectColumnValuesToBeBetween",
        {"column": "product_price", "min_value": 0, "max_value": MAX_PRICE},
    ),
    BenchCheck(
        "strftime timestamp",
        {"strftime_format": {"column": "timestamp", "strftime_format": TIMESTAMP_FORMAT}},
        "ExpectColumnValuesToMatchStrftimeFormat",
        {"column": "timestamp", "strftime_format": TIMESTAMP_FORMAT},
    ),
    BenchCheck(
        "regex email",
        {"regex": {"column": "email", "regex": EMAIL_RE}},
        "ExpectColumnValuesToMatchRegex",
        {"column": "email", "regex": EMAIL_RE},
    ),
    BenchCheck(
        "unique event_id",
        {"unique": {"column": "event_id"}},
        "ExpectColumnValuesToBeUnique",
        {"column": "event_id"},
    ),
    BenchCheck(
        "row_count_between",
        {"row_count_between": {"min_value": 1, "max_value": 1_000_000_000}},
        "ExpectTableRowCountToBeBetween",
        {"min_value": 1, "max_value": 1_000_000_000},
        reads="observed",
    ),
    BenchCheck(
        "mean_between product_price",
        {
            "mean_between": {
                "column": "product_price",
                "min_value": MEAN_PRICE_BOUNDS[0],
                "max_value": MEAN_PRICE_BOUNDS[1],
            }
        },
        "ExpectColumnMeanToBeBetween",
        {
            "column": "product_price",
            "min_value": MEAN_PRICE_BOUNDS[0],
            "max_value": MEAN_PRICE_BOUNDS[1],
        },
        reads="observed",
    ),
    BenchCheck(
        "completeness user_agent",
        {"completeness": {"column": "user_agent", "min": MIN_NON_NULL_AGENTS}},
        "ExpectColumnValuesToNotBeNull",
        {"column": "user_agent", "mostly": MIN_NON_NULL_AGENTS},
    ),
    BenchCheck(
        "regex ip_address (IPv4)",
        {"regex": {"column": "ip_address", "regex": IPV4_RE}},
        "ExpectColumnValuesToMatchRegex",
        {"column": "ip_address", "regex": IPV4_RE},
    ),
)
LABELS = tuple(check.label for check in CHECKS)

REFERENCE_SQL = """
SELECT
    count(*) - count(user_id),
    count(*) FILTER (WHERE event_type NOT IN ({event_types})),
    count(*) FILTER (WHERE product_price < 0 OR product_price > {max_price}),
    count(*) FILTER (WHERE timestamp IS NOT NULL AND try_strptime(timestamp, {ts_format}) IS NULL),
    count(*) FILTER (WHERE NOT regexp_full_match(email, {email_re})),
    count(event_id) - count(DISTINCT event_id),
    count(*),
    avg(product_price),
    count(*) - count(user_agent),
    count(*) FILTER (WHERE NOT regexp_full_match(ip_address, {ipv4_re}))
FROM {table}
"""


@dataclass
class Truth:
    """What the generator planted: the expected result of each check, per engine semantics.

    `expected` follows sluiceway and the reference (a repeat beyond a value's first
    occurrence is unexpected); `ge_expected` overrides it where Great Expectations counts
    differently (it counts every row of a repeated value, first occurrences included).
    """

    rows: int
    expected: dict[str, float]
    ge_expected: dict[str, float]
    generate_seconds: float = 0.0


@dataclass
class Side:
    """The timings and results of one engine over the repeats."""

    name: str
    seconds: list[float] = field(default_factory=list)
    results: dict[str, float] = field(default_factory=dict)
    passed: dict[str, bool] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; bad values stop with a message, not a traceback."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the Parquet file")
    parser.add_argument("--seed", type=int, default=7, help="generator seed")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per side (median)")
    parser.add_argument(
        "--workdir", type=Path, default=DEFAULT_WORKDIR, help="where the Parquet file is cached"
    )
    parser.add_argument(
        "--access",
        choices=("arrow", "parquet"),
        default="arrow",
        help="arrow: the file loaded once into an Arrow table, queried in place (what a "
        "pipeline's audit does with its staged result); parquet: a view over read_parquet, "
        "so every query reads the file",
    )
    parser.add_argument(
        "--ge-python", type=Path, help="a Python with great_expectations 1.x (bench/setup_ge.sh)"
    )
    args = parser.parse_args(argv)
    if args.rows < MIN_ROWS:
        parser.error(f"--rows must be at least {MIN_ROWS:,} (got {args.rows:,})")
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1 (got {args.repeat})")
    if args.ge_python is not None and not os.access(args.ge_python, os.X_OK):
        parser.error(
            f"--ge-python {args.ge_python} is not an executable; create it with "
            "`bash bench/setup_ge.sh` and pass /tmp/sluice-bench-ge/bin/python"
        )
    return args


# --- data -------------------------------------------------------------------------------------


def data_path(workdir: Path, rows: int, seed: int) -> Path:
    """The cached Parquet file for these arguments (its truth sits next to it as JSON)."""
    return workdir / f"clickstream-v{GENERATOR_VERSION}-{rows}-s{seed}.parquet"


def load_or_generate(workdir: Path, rows: int, seed: int) -> tuple[Path, Truth, bool]:
    """The Parquet file, its truth, and whether it was reused from the cache."""
    path = data_path(workdir, rows, seed)
    truth_path = path.with_suffix(".truth.json")
    if path.exists() and truth_path.exists():
        return path, Truth(**json.loads(truth_path.read_text(encoding="utf-8"))), True
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    truth = generate(path, rows, seed)
    truth.generate_seconds = time.perf_counter() - started
    truth_path.write_text(json.dumps(truth.__dict__, indent=2) + "\n", encoding="utf-8")
    return path, truth, False


def generate(path: Path, rows: int, seed: int) -> Truth:
    """Write a clickstream Parquet file whose defects are counted exactly; return the truth.

    Each defect kind hits `rows // 100` distinct rows, and no row carries two kinds: NULL
    user_id, unknown event_type, negative price, unparseable timestamp, bad email, bad IP,
    duplicated event_id (each duplicate copies a different clean row, so there are exactly
    that many repeats, and twice as many rows hold a repeated value); 2 % of the rows have a
    NULL user_agent (the completeness check still passes). Search events have no price.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from sluiceway.demo.clickstream import BAD_EMAILS, UNKNOWN_EVENT_TYPES

    rng = np.random.default_rng(seed)
    each = rows // 100
    spots = iter(np.split(rng.permutation(rows)[: 10 * each], 10))
    marks = {name: next(spots) for name in ("user", "type", "price", "ts", "email", "ip", "dup")}
    dup_sources = next(spots)
    null_agents = np.concatenate([next(spots), next(spots)])

    def mask(where: np.ndarray) -> pa.Array:
        flags = np.zeros(rows, dtype=bool)
        flags[where] = True
        return pa.array(flags)

    def pick(values: tuple[str, ...] | list[str], weights: Any = None) -> pa.Array:
        index = rng.choice(len(values), size=rows, p=weights)
        return pa.array(list(values), pa.string()).take(pa.array(index))

    def spoil(clean: pa.Array, where: np.ndarray, bad: pa.Array | pa.Scalar) -> pa.Array:
        return pc.if_else(mask(where), bad, clean)

    def numbered(prefix: str, numbers: Any, width: int) -> pa.Array:
        digits = pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width=width, padding="0")
        return pc.binary_join_element_wise(prefix, digits, "")

    null = pa.scalar(None, pa.string())
    ids = np.arange(rows)
    ids[marks["dup"]] = dup_sources
    users = rng.integers(1, max(2, rows // 20), size=rows)
    event_type = spoil(
        pick(EVENT_TYPES, EVENT_TYPE_WEIGHTS), marks["type"], pick(UNKNOWN_EVENT_TYPES)
    )
    cents = np.rint(np.exp(rng.uniform(np.log(100), np.log(200_000), size=rows))) / 100
    cents[marks["price"]] *= -1
    no_price = pc.and_(pc.equal(event_type, "search"), pc.invert(mask(marks["price"])))
    price = pc.if_else(no_price, pa.scalar(None, pa.float64()), pa.array(cents))
    seconds = np.sort(rng.integers(0, 86_400, size=rows)) + 1_736_899_200  # 2025-01-15 UTC
    clock = pc.strftime(pa.array(seconds, pa.timestamp("s")), format=TIMESTAMP_FORMAT)
    emails = pc.binary_join_element_wise(numbered("user", users, 1), "@", pick(DOMAINS), "")
    octets = [pa.array(rng.integers(lo, 256, size=rows)).cast(pa.string()) for lo in (1, 0, 0, 0)]
    table = pa.table(
        {
            "event_id": numbered("e", ids, 9),
            "user_id": spoil(numbered("u", users, 7), marks["user"], null),
            "event_type": event_type,
            "timestamp": spoil(clock, marks["ts"], pick(BAD_TIMESTAMPS)),
            "product_price": price,
            "email": spoil(emails, marks["email"], pick(BAD_EMAILS)),
            "ip_address": spoil(
                pc.binary_join_element_wise(*octets, "."), marks["ip"], pick(BAD_IPS)
            ),
            "user_agent": spoil(pick(USER_AGENTS), null_agents, null),
        }
    )
    pq.write_table(table, path.with_suffix(".tmp"), compression="zstd")
    path.with_suffix(".tmp").rename(path)
    expected = dict.fromkeys(LABELS, float(each))
    expected["row_count_between"] = float(rows)
    expected["mean_between product_price"] = float(pc.mean(price).as_py())
    expected["completeness user_agent"] = float(null_agents.size)
    return Truth(rows, expected, {"unique event_id": float(2 * each)})


# --- sluiceway and the reference ----------------------------------------------------------------


def open_data(path: Path, access: str) -> tuple[Any, Any, float]:
    """A DuckDBEngine with the data as `events`, the Arrow table if any, and the load seconds."""
    import pyarrow.parquet as pq

    from sluiceway.engines.duckdb import DuckDBEngine, quote_literal

    engine = DuckDBEngine(redact_values=True)
    started = time.perf_counter()
    if access == "arrow":
        data = pq.read_table(path)
        engine.register_view(TABLE, data)
    else:
        data = None
        engine.create_view(TABLE, f"SELECT * FROM read_parquet({quote_literal(str(path))})")
    return engine, data, time.perf_counter() - started


def sluiceway_checks(workdir: Path) -> list[Any]:
    """The ten checks through sluiceway's own front door: a checks file, validated."""
    import yaml

    from sluiceway.core.loader import load_checks

    path = workdir / "checks.yaml"
    document = {"version": 1, "checks": [check.sluiceway for check in CHECKS]}
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return load_checks(path)


def reference_sql() -> str:
    """The hand-written floor: one SELECT computing all ten results, in `CHECKS` order."""
    from sluiceway.engines.duckdb import quote_literal

    return REFERENCE_SQL.format(
        event_types=", ".join(quote_literal(t) for t in EVENT_TYPES),
        max_price=MAX_PRICE,
        ts_format=quote_literal(TIMESTAMP_FORMAT),
        email_re=quote_literal(EMAIL_RE),
        ipv4_re=quote_literal(IPV4_RE),
        table=TABLE,
    )


def run_reference(engine: Any, side: Side) -> None:
    """One timed run of the reference query on the engine's own connection."""
    sql = reference_sql()
    started = time.perf_counter()
    row = engine.con.execute(sql).fetchone()
    side.seconds.append(time.perf_counter() - started)
    side.results = {label: float(value) for label, value in zip(LABELS, row, strict=True)}


def run_sluiceway(engine: Any, checks: list[Any], side: Side, audit: Side) -> None:
    """One timed `evaluate_checks`, then one timed audit (`evaluate_checks` + samples)."""
    from sluiceway.checks.table import evaluate_checks, sample_unexpected

    started = time.perf_counter()
    results = evaluate_checks(engine, TABLE, checks)
    side.seconds.append(time.perf_counter() - started)
    record_results(side, results)
    before = engine.statements
    started = time.perf_counter()
    results = evaluate_checks(engine, TABLE, checks)
    samples = sample_unexpected(engine, TABLE, checks, results)
    audit.seconds.append(time.perf_counter() - started)
    record_results(audit, results)
    sampled = sum(bool(s) for s in samples)
    audit.notes = [f"{engine.statements - before} statements ({sampled} sample queries)"]


def record_results(side: Side, results: list[Any]) -> None:
    """The compared figure of each sluiceway result: unexpected count or observed value."""
    for check, result in zip(CHECKS, results, strict=True):
        if result.error is not None:
            raise SystemExit(f"sluiceway could not evaluate {check.label}: {result.error}")
        value = result.unexpected_count if check.reads == "unexpected" else result.observed_value
        side.results[check.label] = float(value)
        side.passed[check.label] = result.success


# --- Great Expectations -------------------------------------------------------------------------

GE_SCRIPT = r"""
import json, sys, time
spec = json.loads(sys.stdin.read())
started = time.perf_counter()
try:
    import great_expectations as gx
    import pandas as pd
except ImportError as exc:
    sys.exit(f"cannot import Great Expectations or pandas ({exc}); run bench/setup_ge.sh")
if not gx.__version__.startswith("1."):
    sys.exit(f"great_expectations 1.x is needed, found {gx.__version__}; run bench/setup_ge.sh")
import_s = time.perf_counter() - started
started = time.perf_counter()
frame = pd.read_parquet(spec["path"])
load_s = time.perf_counter() - started
started = time.perf_counter()
context = gx.get_context(mode="ephemeral")
asset = context.data_sources.add_pandas("bench").add_dataframe_asset("events")
batch = asset.add_batch_definition_whole_dataframe("all").get_batch(
    batch_parameters={"dataframe": frame}
)
suite = gx.ExpectationSuite(name="bench")
for check in spec["checks"]:
    expectation = getattr(gx.expectations, check["type"])(**check["kwargs"])
    expectation.meta = {"label": check["label"]}
    suite.add_expectation(expectation)
setup_s = time.perf_counter() - started
seconds = []
for _ in range(spec["repeat"]):
    started = time.perf_counter()
    validation = batch.validate(suite, result_format="BASIC")
    seconds.append(time.perf_counter() - started)
results, passed = {}, {}
for result in validation.results:
    label = result.expectation_config.meta["label"]
    value = result.result.get("unexpected_count", result.result.get("observed_value"))
    if result.exception_info.get("raised_exception"):
        sys.exit(f"{label}: {result.exception_info['exception_message']}")
    results[label], passed[label] = float(value), bool(result.success)
print(json.dumps({
    "seconds": seconds, "results": results, "passed": passed, "import_s": import_s,
    "load_s": load_s, "setup_s": setup_s,
    "versions": {"great_expectations": gx.__version__, "pandas": pd.__version__},
}))
"""


def run_ge(ge_python: Path, path: Path, repeat: int) -> Side:
    """GE 1.x on pandas in its own interpreter: loads the file once, validates `repeat` times."""
    spec = {
        "path": str(path),
        "repeat": repeat,
        "checks": [{"label": c.label, "type": c.ge_type, "kwargs": c.ge_kwargs} for c in CHECKS],
    }
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [str(ge_python), "-c", GE_SCRIPT],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(
            f"Great Expectations failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise SystemExit(f"Great Expectations printed no result:\n{done.stderr[-3000:]}")
    report = json.loads(lines[-1])
    side = Side("great_expectations", report["seconds"], report["results"], report["passed"])
    versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
    side.notes = [
        f"{versions}; import {report['import_s']:.1f}s, pandas read_parquet "
        f"{report['load_s']:.1f}s, context and suite {report['setup_s']:.1f}s (not timed)"
    ]
    return side


# --- verification and report ---------------------------------------------------------------------


def expected_for(side: Side, truth: Truth, label: str) -> float:
    """What `side` should report for `label`, given how that engine counts."""
    if side.name == "great_expectations" and label in truth.ge_expected:
        return truth.ge_expected[label]
    return truth.expected[label]


def agrees(found: float, expected: float) -> bool:
    """Counts must be equal; the mean may differ by summation order only."""
    return math.isclose(found, expected, rel_tol=1e-9, abs_tol=0.0)


def verify(sides: list[Side], truth: Truth) -> list[str]:
    """Print the per-check table of every engine; return the disagreements."""
    width = max(map(len, LABELS)) + 2
    header = "".join(f"{s.name:>24}" for s in sides)
    print(f"\n{'check':<{width}}{'planted':>16}{header}")
    problems = []
    for label in LABELS:
        cells = []
        for side in sides:
            found, expected = side.results.get(label, math.nan), expected_for(side, truth, label)
            mark = "" if agrees(found, expected) else " !"
            cells.append(f"{_figure(found)}{mark:>2}".rjust(24))
            if mark:
                problems.append(
                    f"{side.name} reports {_figure(found)} for '{label}', expected "
                    f"{_figure(expected)} (difference {_figure(found - expected)})"
                )
        print(f"{label:<{width}}{_figure(truth.expected[label]):>16}{''.join(cells)}")
    if any(s.name == "great_expectations" for s in sides):
        print(
            "  (GE's unique count includes the first occurrence of each repeated value: "
            f"{_figure(truth.ge_expected['unique event_id'])} expected from it)"
        )
    verdicts = {tuple(s.passed.get(label) for label in LABELS) for s in sides if s.passed}
    if len(verdicts) > 1:
        problems.append("the engines disagree on which checks passed")
    return problems


def _figure(value: float) -> str:
    if math.isnan(value):
        return "missing"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.6f}"


def report(sides: list[Side], floor: Side, rows: int) -> None:
    """Print each side's median and its ratio to the floor."""
    print(f"\nrows: {rows:,}   median of {len(floor.seconds)} run(s) per side")
    print(f"{'side':<26}{'median s':>10}{'rows/s':>14}{'ratio':>8}   runs s")
    for side in sides:
        runs = ", ".join(f"{s:.3f}" for s in side.seconds)
        ratio = side.median / floor.median
        print(
            f"{side.name:<26}{side.median:>10.3f}{rows / side.median:>14,.0f}"
            f"{ratio:>7.2f}x   {runs}"
        )
        for note in side.notes:
            print(f"{'':<28}{note}")
    checks = next(s for s in sides if s.name == "sluiceway checks")
    ratio = checks.median / floor.median
    verdict = "within" if ratio <= GOAL else "ABOVE"
    print(f"sluiceway evaluate_checks / reference: {ratio:.2f}x ({verdict} the {GOAL}x goal)")


def describe_machine() -> str:
    """Python, duckdb and pyarrow versions, cores and the 1-minute load average."""
    import duckdb
    import pyarrow

    return (
        f"Python {platform.python_version()}, duckdb {duckdb.__version__}, pyarrow "
        f"{pyarrow.__version__}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )


def timed_rounds(repeat: int, steps: list[Callable[[], None]]) -> list[float]:
    """Run the steps in turn, `repeat` rounds (so the sides alternate); load average per round."""
    loads = []
    for _ in range(repeat):
        loads.append(os.getloadavg()[0])
        for step in steps:
            step()
    return loads


def run_bench(args: argparse.Namespace) -> int:
    """Generate or reuse the data, time every side, verify the counts, report; the exit code."""
    workdir = args.workdir.resolve()
    path, truth, is_cached = load_or_generate(workdir, args.rows, args.seed)
    how = f"{'cached, ' if is_cached else ''}generated in {truth.generate_seconds:.1f}s"
    print(f"data: {path} ({truth.rows:,} rows, {path.stat().st_size / 2**20:,.0f} MiB, {how})")
    print(describe_machine())
    engine, data, load_s = open_data(path, args.access)
    print(f"access: {args.access} (loaded in {load_s:.2f}s, not timed; the same for both sides)")
    checks = sluiceway_checks(workdir)
    floor, ours, audit = (
        Side("reference (one SELECT)"),
        Side("sluiceway checks"),
        Side("sluiceway audit"),
    )
    run_reference(engine, floor)  # warm-up: first touch of the data, not counted
    floor.seconds.clear()
    loads = timed_rounds(
        args.repeat,
        [lambda: run_reference(engine, floor), lambda: run_sluiceway(engine, checks, ours, audit)],
    )
    print("load average before each round: " + ", ".join(f"{load:.2f}" for load in loads))
    engine.close()
    del data
    sides = [ours, audit, floor]
    if args.ge_python is not None:
        print("running Great Expectations (pandas) ...", flush=True)
        sides.append(run_ge(args.ge_python, path, args.repeat))
    problems = verify([s for s in sides if s is not audit], truth)
    report(sides, floor, truth.rows)
    if problems:
        print("\nDISAGREEMENT:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point."""
    sys.exit(run_bench(parse_args(argv)))


if __name__ == "__main__":
    main()
