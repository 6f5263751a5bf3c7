"""Same-run A/B of the clickstream_stream example: one Redis stream filled once, `sluice run`
on it once per variant and round (a new consumer group each time), variants alternating, so
the machine's drift hits every variant alike.

A variant is a set of environment variables for the `sluice` process, written `NAME=value`
and joined by commas; an empty string is the code as installed. To compare with another
checkout, point PYTHONPATH at its `src`:

    git worktree add /tmp/before HEAD~1
    .venv/bin/python bench/stream_ab.py --rounds 3 "" PYTHONPATH=/tmp/before/src
    .venv/bin/python bench/stream_ab.py "CLICKSTREAM_BATCH_ROWS=100000" ""

Prints each run's sustained events/s (first to last commit, as `stream_redis.py`) and each
variant's median; a run whose accounting does not match the producer's stops the comparison.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import uuid
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stream_redis as bench  # a sibling script, found through the path above


def parse_variant(text: str) -> dict[str, str]:
    """'A=1,B=x' → {'A': '1', 'B': 'x'}; '' → {}."""
    variant = {}
    for item in filter(None, text.split(",")):
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SystemExit(f"variant item {item!r} is not NAME=value")
        variant[name] = value
    return variant


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="NAME=value,... per variant ('' = as is)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sluice-bench/stream_ab"))
    args = parser.parse_args(argv)
    variants = [parse_variant(v) for v in args.variants]
    client = bench.connect(args.url)
    bench.produce.load_hashes(client, users=10_000, products=2_000)
    payloads, kinds = bench.generate(args.events, defects=0.05, seed=7)
    stream = f"sluice-ab-{uuid.uuid4().hex[:8]}"
    bench.produce.send(client, stream, payloads)
    rates: list[list[float]] = [[] for _ in variants]
    try:
        for round_ in range(1, args.rounds + 1):
            for index, variant in enumerate(variants):
                rate = run_once(args, client, stream, variant, kinds["valid"])
                rates[index].append(rate)
                print(f"round {round_} variant {index} {variant}: {rate:,.0f} events/s", flush=True)
    finally:
        client.delete(stream)
    for variant, got in zip(variants, rates, strict=True):
        runs = " / ".join(f"{r:,.0f}" for r in got)
        print(f"{variant or '(as installed)'}: median {statistics.median(got):,.0f} ({runs})")
    return 0


def run_once(
    args: argparse.Namespace, client: redis.Redis, stream: str, variant: dict[str, str], valid: int
) -> float:
    """One `sluice run` over the whole stream with a new group; its sustained events/s."""
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    shutil.copyfile(bench.EXAMPLE / "pipeline.yaml", args.workdir / "pipeline.yaml")
    if client.exists(stream) and any(
        g["name"] == bench.GROUP.encode() for g in client.xinfo_groups(stream)
    ):
        client.xgroup_destroy(stream, bench.GROUP)
    env = {
        **os.environ,
        "REDIS_URL": args.url,
        "CLICKSTREAM_STREAM": stream,
        "SLUICE_HOME": str(args.workdir / ".sluice"),
        "SLUICE_HMAC_KEY": os.environ.get("SLUICE_HMAC_KEY") or secrets.token_hex(32),
        "SLUICE_ENCRYPTION_KEY": os.environ.get("SLUICE_ENCRYPTION_KEY") or secrets.token_hex(32),
        "BENCH_IDLE_EXIT": "2",
        **variant,
    }
    run = bench.run_sluice(args.workdir, env)
    written = run.summary["accounting"]["rows_written"]
    if written != valid:
        raise SystemExit(f"variant {variant}: wrote {written:,} rows, the producer sent {valid:,}")
    if len(run.batches) < 2:
        raise SystemExit(
            f"the stream fit in {len(run.batches)} batch(es): the rate is counted from the "
            "first commit to the last, so use more --events (1M by default)"
        )
    return bench.sustained_rate(run.batches)


if __name__ == "__main__":
    sys.exit(main())
