"""Benchmark: the clickstream_stream example on 1M events in Redis Streams.

Fills a fresh stream with the example's events (5% defective), measures in the same run the
raw rate of a plain redis-py XREADGROUP + XACK loop over the same entries (the client's
ceiling), then runs `sluice run examples/clickstream_stream/pipeline.yaml` on them in a
subprocess and prints sustained events/s (first to last commit), end-to-end latency p50/p99
per event (enqueue to commit), the sluice process's peak memory, the ratio to the raw rate,
and where each batch's time went (from the `--log-format json` events).

    .venv/bin/python bench/stream_redis.py                        # 1M events, backlog
    .venv/bin/python bench/stream_redis.py --mode live --rate 100000
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import multiprocessing
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import psutil
import redis

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "clickstream_stream"
SLUICE = str(Path(sys.executable).parent / "sluice")
GROUP = "clickstream_stream"
GOAL_EVENTS_PER_S = 100_000
GOAL_P99_S = 5.0
GOAL_RATIO = 0.7

PROFILED_SLUICE = """
import cProfile, collections, functools, json, os, sys, time
from sluiceway.cli import main
from sluiceway.engines.duckdb import DuckDBEngine

spent = collections.defaultdict(lambda: [0, 0.0])

def timed(method):
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        try:
            return method(self, *args, **kwargs)
        finally:
            entry = spent[method.__name__ + ": " + kwargs.get("purpose", "?")]
            entry[0] += 1
            entry[1] += time.perf_counter() - started
    return wrapper

for name in ("execute", "fetch_arrow", "fetch_reader"):
    setattr(DuckDBEngine, name, timed(getattr(DuckDBEngine, name)))
profiler, code = cProfile.Profile(), 0
profiler.enable()
try:
    main(sys.argv[2:], standalone_mode=False)
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
finally:
    profiler.disable()
    profiler.dump_stats(sys.argv[1])
    with open(sys.argv[1] + ".duckdb.json", "w") as out:
        json.dump(spent, out)
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)
"""
"""`sluice` under cProfile, with the wall time of DuckDB statements summed by purpose;
`sluice`'s own entry point leaves with os._exit, which would skip writing the profile."""

INTERVAL_NAMES = {
    "after stream_resumed": "fetch: first batch (broker read, to Arrow)",
    "after stream_status": "fetch: next batch (broker read, to Arrow)",
    "after run_started": "batch run set-up",
    "reading source events": "parse JSON payloads",
    "after source_read": "parse → contract",
    "checking the contract of events": "contract",
    "after rows_rejected": "contract → steps",
    "masking and staging": "mask PII, stage to Arrow",
    "looking for PII under other names": "PII guard",
    "writing dead letters": "dead letters (Delta)",
    "after dead_letter_written": "dead letters → audit",
    "auditing the staged result": "table checks",
    "after checks_done": "checks → sink",
    "writing sink 1/1": "Delta commit",
    "after commit_done": "after commit (dedup state, run record)",
    "after run_succeeded": "stream runner bookkeeping",
    "after batch_committed": "ack, batch record, lag",
}


def load_producer() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "clickstream_stream_produce", EXAMPLE / "produce.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


produce = load_producer()


@dataclass
class SluiceRun:
    """What the sluice subprocess did: summary, events, its batches and its memory."""

    summary: dict[str, Any]
    events: list[dict[str, Any]]
    batches: list[dict[str, Any]]
    peak_rss: int
    cpu_s: float
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


def generate(events: int, *, defects: float, seed: int) -> tuple[list[bytes], Counter[str]]:
    """The payloads, made before anything is timed, and their kinds."""
    maker = produce.EventMaker(users=10_000, products=2_000, defects=defects, seed=seed)
    payloads, kinds = [], Counter[str]()
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for _ in range(events):
        payload, kind = maker.make(now)
        payloads.append(payload)
        kinds[kind] += 1
    return payloads, kinds


def send_at_rate(url: str, stream: str, payloads: list[bytes], rate: float) -> None:
    """The live producer: runs in a forked process, so it has a core of its own."""
    started = time.perf_counter()
    produce.send(redis.Redis.from_url(url), stream, payloads, rate=rate)
    seconds = time.perf_counter() - started
    print(
        f"producer: {len(payloads):,} events in {seconds:.1f} s, {len(payloads) / seconds:,.0f}/s"
    )
    sys.stdout.flush()
    # Leave without finalizers: they would shut down the parent's Redis connections, which
    # the fork inherited.
    os._exit(0)


def raw_rate(url: str, stream: str, count: int, total: int) -> tuple[float, np.ndarray]:
    """A plain redis-py consumer: XREADGROUP `count` entries, XACK them, until `total`.

    Returns:
        Entries per second, and the enqueue time (ms, from the entry id) of every entry in
        stream order.
    """
    client = redis.Redis.from_url(url)  # its own connection, like a fresh consumer
    group = f"raw-{uuid.uuid4().hex[:8]}"
    client.xgroup_create(stream, group, id="0")
    ids: list[bytes] = []
    started = time.perf_counter()
    while len(ids) < total:
        reply = client.xreadgroup(group, "raw", {stream: ">"}, count=count, block=1000)
        if not reply:
            break
        batch = [entry_id for entry_id, _ in reply[0][1]]
        client.xack(stream, group, *batch)
        ids += batch
    seconds = time.perf_counter() - started
    client.xgroup_destroy(stream, group)
    enqueued = np.array([int(i.split(b"-", 1)[0]) for i in ids], dtype=np.int64)
    return len(ids) / seconds, enqueued


def run_sluice(
    workdir: Path,
    env: dict[str, str],
    *,
    profile: bool = False,
    on_ready: Any = None,
    events_log: str = "events.jsonl",
) -> SluiceRun:
    """`sluice run` until idle (`BENCH_IDLE_EXIT` seconds), sampling its RSS; calls
    `on_ready` once it has resumed; its events go to `workdir/events_log`."""
    command = [
        "run",
        "pipeline.yaml",
        "--idle-exit",
        env["BENCH_IDLE_EXIT"],
        "--log-format",
        "json",
    ]
    if profile:
        command = [sys.executable, "-c", PROFILED_SLUICE, str(workdir / "sluice.prof"), *command]
    else:
        command = [SLUICE, *command]
    started = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    peak = [0, 0.0]
    sampler = threading.Thread(target=_sample_rss, args=(proc.pid, peak), daemon=True)
    sampler.start()
    events: list[dict[str, Any]] = []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        try:
            event = json.loads(line)
        except ValueError:
            sys.stderr.write(line.decode(errors="replace"))
            continue
        events.append(event)
        if event.get("event") == "stream_resumed" and on_ready is not None:
            on_ready()
    out = proc.stdout.read().decode()
    proc.wait()
    seconds = time.perf_counter() - started
    sampler.join(timeout=2)
    if proc.returncode != 0:
        raise SystemExit(f"sluice failed ({proc.returncode}): {out[-2000:]}")
    summary = json.loads(out.strip().splitlines()[-1])
    with sqlite3.connect(workdir / ".sluice" / "runs.db") as con:
        con.row_factory = sqlite3.Row
        batches = [
            dict(r)
            for r in con.execute(
                "SELECT * FROM stream_batches WHERE run_id = ? ORDER BY batch", (summary["run_id"],)
            )
        ]
    with open(workdir / events_log, "w") as log:
        log.writelines(json.dumps(event) + "\n" for event in events)
    return SluiceRun(summary, events, batches, int(peak[0]), peak[1], seconds)


def _sample_rss(pid: int, peak: list[float]) -> None:
    """Peak RSS and the last CPU time (user + system) seen of the process."""
    try:
        process = psutil.Process(pid)
        while process.is_running():
            rss = process.memory_info().rss
            rss += sum(c.memory_info().rss for c in process.children(recursive=True))
            peak[0] = max(peak[0], rss)
            cpu = process.cpu_times()
            peak[1] = cpu.user + cpu.system
            time.sleep(0.05)
    except psutil.Error:
        return


def sustained_rate(batches: list[dict[str, Any]]) -> float:
    """Events per second from the first commit to the last (the first batch's events are
    before the first commit, so they are left out)."""
    if len(batches) < 2:
        return float("nan")
    first, last = (_epoch(b["committed_at"]) for b in (batches[0], batches[-1]))
    return sum(b["events_in"] for b in batches[1:]) / (last - first)


def e2e_latencies(batches: list[dict[str, Any]], enqueued_ms: np.ndarray) -> np.ndarray:
    """Seconds from enqueue to commit for every event: batches cover the stream in order."""
    sizes = [b["events_in"] + b["already_committed"] for b in batches]
    committed = np.repeat([_epoch(b["committed_at"]) * 1000 for b in batches], sizes)
    n = min(len(committed), len(enqueued_ms))
    return (committed[:n] - enqueued_ms[:n]) / 1000


def stage_times(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds between consecutive events, summed by what the earlier event started."""
    totals: dict[str, float] = Counter()
    previous: tuple[str, float] | None = None
    for event in events:
        now = _epoch(event["ts"])
        name = event["event"]
        if name == "run_started" and previous and previous[0] == "after run_succeeded":
            previous = None  # the stream run's own start
        if name in ("run_succeeded", "run_failed") and "batches" in event:
            break  # the stream run's end: the interval before it is the idle wait
        if previous is not None:
            totals[INTERVAL_NAMES.get(previous[0], previous[0])] += now - previous[1]
        label = event["stage"] if name == "progress" else f"after {name}"
        previous = (label, now)
    return dict(totals)


def redis_cpu_s(client: redis.Redis) -> float:
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def report(
    args: argparse.Namespace,
    run: SluiceRun,
    raw: float,
    kinds: Counter[str],
    *,
    raw_label: str = "raw XREADGROUP+XACK",
) -> bool:
    acc = run.summary["accounting"]
    batches = run.batches
    rate = sustained_rate(batches)
    lat = run.extra["latencies"]
    p50, p99 = (float(np.quantile(lat, q)) for q in (0.5, 0.99)) if len(lat) else (0.0, 0.0)
    ratio = rate / raw
    balanced = acc["rows_in"] == (
        acc["rows_written"] + acc["rows_rejected"] + acc["rows_deduplicated"] + acc["rows_filtered"]
    )
    expected = {
        "rows_in": args.events,
        "rows_written": kinds["valid"],
        "rows_rejected": kinds["malformed_json"]
        + kinds["bad_event_type"]
        + kinds["negative_price"],
        "rows_deduplicated": kinds["duplicate"],
    }
    wrong = {k: (acc[k], v) for k, v in expected.items() if acc[k] != v}
    print(f"\nsluice: {run.summary['status']}, {len(batches)} batches, {run.seconds:.1f} s wall")
    print(f"  accounting {acc}  balanced={balanced}  matches producer={not wrong} {wrong or ''}")
    print(f"  sustained           {rate:>12,.0f} events/s   (goal >= {GOAL_EVENTS_PER_S:,})")
    print(f"  {raw_label:<19} {raw:>12,.0f} events/s   ratio {ratio:.2f}x (goal >= {GOAL_RATIO})")
    print(f"  e2e latency         p50 {p50:.2f} s   p99 {p99:.2f} s   (goal p99 < {GOAL_P99_S})")
    per_batch = [b["e2e_p99_s"] for b in batches if b["e2e_p99_s"] is not None]
    print(f"  stream_batches      max batch p99 {max(per_batch, default=0):.2f} s, "
          f"median batch_latency_s {np.median([b['batch_latency_s'] for b in batches]):.3f}")  # fmt: skip
    print(f"  peak RSS (sluice)   {run.peak_rss / 2**20:,.0f} MiB")
    redis_cpu = run.extra.get("redis_cpu_s")
    server = "" if redis_cpu is None else f", redis-server {redis_cpu:.1f} s during the run"
    print(
        f"  CPU                 sluice {run.cpu_s:.1f} s ({run.cpu_s / run.seconds:.2f} cores "
        f"over {run.seconds:.1f} s){server}"
    )
    stages = stage_times(run.events)
    total = sum(stages.values())
    print("  time by stage (sum over batches):")
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1]):
        if seconds >= 0.005 * total:
            print(f"    {name:<44} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")
    load = os.getloadavg()
    print(f"  load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {os.cpu_count()} CPUs")
    return balanced and not wrong and run.summary["status"] == "succeeded"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--mode",
        choices=("backlog", "live"),
        default="backlog",
        help="backlog: fill the stream, then run (throughput); live: run while a producer "
        "process sends at --rate (latency)",
    )
    parser.add_argument("--rate", type=float, default=100_000, help="live: events/s sent")
    parser.add_argument("--batch-rows", type=int, default=200_000, help="stream.max_batch_rows")
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--raw-count", type=int, default=10_000, help="COUNT of the raw loop")
    parser.add_argument("--defects", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sluice-bench/stream_redis"))
    parser.add_argument("--profile", action="store_true", help="cProfile the sluice process")
    parser.add_argument("--keep", action="store_true", help="keep the stream and the workdir")
    return parser.parse_args(argv)


def connect(url: str) -> redis.Redis:
    """A client of the Redis at `url`; exits naming the start script when it is not up."""
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise SystemExit(
            f"Redis not reachable at {url} ({exc}): start it with `bash scripts/services/redis.sh`"
        ) from exc
    return client


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = connect(args.url)
    stream = f"sluice-bench-{uuid.uuid4().hex[:8]}"
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    shutil.copyfile(EXAMPLE / "pipeline.yaml", args.workdir / "pipeline.yaml")
    env = {
        **os.environ,
        "REDIS_URL": args.url,
        "CLICKSTREAM_STREAM": stream,
        "CLICKSTREAM_BATCH_ROWS": str(args.batch_rows),
        "CLICKSTREAM_BATCH_SECONDS": str(args.batch_seconds),
        "SLUICE_HOME": str(args.workdir / ".sluice"),
        "SLUICE_HMAC_KEY": os.environ.get("SLUICE_HMAC_KEY") or secrets.token_hex(32),
        "SLUICE_ENCRYPTION_KEY": os.environ.get("SLUICE_ENCRYPTION_KEY") or secrets.token_hex(32),
        "BENCH_IDLE_EXIT": "3",
    }
    print(f"stream {stream}, {args.events:,} events, mode {args.mode}, workdir {args.workdir}")
    try:
        produce.load_hashes(client, users=10_000, products=2_000)
        started = time.perf_counter()
        payloads, kinds = generate(args.events, defects=args.defects, seed=args.seed)
        print(f"generated in {time.perf_counter() - started:.1f} s: {dict(kinds)}")
        if args.mode == "backlog":
            started = time.perf_counter()
            produce.send(client, stream, payloads)
            print(f"XADD {args.events / (time.perf_counter() - started):,.0f} events/s")
            raw, enqueued = raw_rate(args.url, stream, args.raw_count, args.events)
            cpu_before = redis_cpu_s(client)
            run = run_sluice(args.workdir, env, profile=args.profile)
            run.extra["redis_cpu_s"] = redis_cpu_s(client) - cpu_before
        else:
            client.xgroup_create(stream, GROUP, id="0", mkstream=True)
            cpu_before = redis_cpu_s(client)
            sender = multiprocessing.get_context("fork").Process(
                target=send_at_rate, args=(args.url, stream, payloads, args.rate)
            )
            run = run_sluice(args.workdir, env, profile=args.profile, on_ready=sender.start)
            sender.join()
            run.extra["redis_cpu_s"] = redis_cpu_s(client) - cpu_before
            raw, enqueued = raw_rate(args.url, stream, args.raw_count, args.events)
        run.extra["latencies"] = e2e_latencies(run.batches, enqueued)
        ok = report(args, run, raw, kinds)
        if args.profile:
            print_profile(args.workdir / "sluice.prof")
    finally:
        if not args.keep:
            client.delete(stream)
    return 0 if ok else 1


def print_profile(path: Path) -> None:
    import pstats

    print(f"\ncProfile of the sluice process ({path}), top 30 by cumulative time:")
    pstats.Stats(str(path)).sort_stats("cumulative").print_stats(30)
    print("top 25 by own time:")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(25)
    spent = json.loads(Path(f"{path}.duckdb.json").read_text())
    print("DuckDB statements by purpose (wall s; a view costs nothing until it is read):")
    for purpose, (calls, seconds) in sorted(spent.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"  {seconds:7.3f} s  {calls:5d}×  {purpose}")


if __name__ == "__main__":
    sys.exit(main())
