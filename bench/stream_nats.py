"""Benchmark: the clickstream_stream example on 1M events from NATS JetStream.

The same events, spec and measures as `bench/stream_redis.py`, in its two modes: backlog
(fill the stream, then run: throughput) and live (run while a producer process publishes at
`--rate`: end-to-end latency). Only the source differs: the example's `redis_streams`
source is replaced by a `nats` source on a fresh JetStream stream (file storage). The
enrichment hashes stay in Redis. The plain consumer here is nats-py: a pull subscription
that fetches `--raw-count` messages and acks each one.

    .venv/bin/python bench/stream_nats.py                  # 1M events
    .venv/bin/python bench/stream_nats.py --mode live --rate 50000
    .venv/bin/python bench/stream_nats.py --events 300000 --profile
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import multiprocessing
import os
import secrets
import shutil
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType

import nats
import numpy as np
import redis
import yaml
from nats.js.api import AckPolicy, ConsumerConfig, StorageType, StreamConfig

HERE = Path(__file__).resolve().parent
PUBLISH_FLUSH_EVERY = 10_000


def load_redis_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_stream_redis", HERE / "stream_redis.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = load_redis_bench()


def write_spec(workdir: Path, *, url: str, stream: str, subject: str) -> None:
    """The example's spec with its source swapped for a `nats` source."""
    data = yaml.safe_load((bench.EXAMPLE / "pipeline.yaml").read_text())
    contract = data["sources"]["events"]["contract"]
    data["sources"]["events"] = {
        "type": "nats",
        "url": url,
        "stream": stream,
        "subject": subject,
        "durable": "clickstream_stream",
        "contract": contract,
    }
    (workdir / "pipeline.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


async def create(url: str, stream: str, subject: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().add_stream(
        StreamConfig(name=stream, subjects=[subject], storage=StorageType.FILE)
    )
    await nc.close()


async def publish(nc: nats.NATS, subject: str, payloads: list[bytes], rate: float = 0.0) -> None:
    """Core publish of every payload, flushed every `PUBLISH_FLUSH_EVERY` (or every 20th of
    a second's worth at `rate` events/s, sleeping so that the rate holds on average)."""
    sent = 0
    for size in bench.produce.chunks(len(payloads), rate):
        for payload in payloads[sent : sent + size]:
            await nc.publish(subject, payload)
        sent += size
        if rate > 0 or sent % PUBLISH_FLUSH_EVERY < size:
            await nc.flush()
    await nc.flush()


async def fill(url: str, stream: str, subject: str, payloads: list[bytes]) -> float:
    """Create the stream and publish every payload; events/s until JetStream holds them."""
    await create(url, stream, subject)
    nc = await nats.connect(url)
    js = nc.jetstream()
    started = time.perf_counter()
    await publish(nc, subject, payloads)
    while (await js.stream_info(stream)).state.messages < len(payloads):
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    await nc.close()
    return len(payloads) / seconds


def send_at_rate(url: str, subject: str, payloads: list[bytes], rate: float) -> None:
    """The live producer: runs in a forked process, so it has a core of its own."""

    async def send() -> None:
        nc = await nats.connect(url)
        await publish(nc, subject, payloads, rate)
        await nc.close()

    started = time.perf_counter()
    asyncio.run(send())
    seconds = time.perf_counter() - started
    print(
        f"producer: {len(payloads):,} events in {seconds:.1f} s, {len(payloads) / seconds:,.0f}/s"
    )
    sys.stdout.flush()
    os._exit(0)  # no finalizers: they would close the parent's connections


async def raw_rate(url: str, stream: str, subject: str, count: int, total: int) -> tuple:
    """nats-py pull consumer: fetch `count`, ack each, until `total`; (events/s, enqueue ms)."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    # max_ack_pending -1 as the source sets it: the default (1,000) would cap every fetch.
    config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=-1)
    durable = f"raw-{uuid.uuid4().hex[:8]}"
    sub = await js.pull_subscribe(subject, durable=durable, stream=stream, config=config)
    replies: list[str] = []
    started = time.perf_counter()
    while len(replies) < total:
        try:
            msgs = await sub.fetch(count, timeout=2)
        except nats.errors.TimeoutError:
            break
        for msg in msgs:
            await msg.ack()
            replies.append(msg.reply)
    await nc.flush()
    seconds = time.perf_counter() - started
    await nc.close()
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ns>.<pending>
    enqueued = np.array([int(r.split(".")[-2]) // 1_000_000 for r in replies], dtype=np.int64)
    return len(replies) / seconds, enqueued


async def delete_stream(url: str, stream: str) -> None:
    nc = await nats.connect(url)
    await nc.jetstream().delete_stream(stream)
    await nc.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--mode",
        choices=("backlog", "live"),
        default="backlog",
        help="backlog: fill the stream, then run (throughput); live: run while a producer "
        "process publishes at --rate (latency)",
    )
    parser.add_argument("--rate", type=float, default=50_000, help="live: events/s published")
    parser.add_argument("--batch-rows", type=int, default=200_000, help="stream.max_batch_rows")
    parser.add_argument("--batch-seconds", type=float, default=1.0)
    parser.add_argument("--raw-count", type=int, default=10_000, help="batch of the raw fetch")
    parser.add_argument("--defects", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--nats-url", default=os.environ.get("NATS_URL", "nats://127.0.0.1:4222"))
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/sluice-bench/stream_nats"))
    parser.add_argument("--profile", action="store_true", help="cProfile the sluice process")
    parser.add_argument("--keep", action="store_true", help="keep the JetStream stream")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    client = redis.Redis.from_url(args.url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise SystemExit(
            f"Redis (for the enrichment hashes) not reachable at {args.url} ({exc}): start it "
            "with `bash scripts/services/redis.sh`"
        ) from exc
    stream = f"SLUICE_BENCH_{uuid.uuid4().hex[:8].upper()}"
    subject = f"{stream.lower()}.events"
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    write_spec(args.workdir, url=args.nats_url, stream=stream, subject=subject)
    env = {
        **os.environ,
        "REDIS_URL": args.url,
        "CLICKSTREAM_BATCH_ROWS": str(args.batch_rows),
        "CLICKSTREAM_BATCH_SECONDS": str(args.batch_seconds),
        "SLUICE_HOME": str(args.workdir / ".sluice"),
        "SLUICE_HMAC_KEY": os.environ.get("SLUICE_HMAC_KEY") or secrets.token_hex(32),
        "SLUICE_ENCRYPTION_KEY": os.environ.get("SLUICE_ENCRYPTION_KEY") or secrets.token_hex(32),
        "BENCH_IDLE_EXIT": "3",
    }
    print(
        f"JetStream stream {stream}, {args.events:,} events, mode {args.mode}, "
        f"workdir {args.workdir}"
    )
    bench.produce.load_hashes(client, users=10_000, products=2_000)
    payloads, kinds = bench.generate(args.events, defects=args.defects, seed=args.seed)
    try:
        try:
            if args.mode == "backlog":
                rate = asyncio.run(fill(args.nats_url, stream, subject, payloads))
                print(f"published {rate:,.0f} events/s")
            else:
                asyncio.run(create(args.nats_url, stream, subject))
        except (OSError, nats.errors.NoServersError) as exc:
            raise SystemExit(
                f"NATS not reachable at {args.nats_url} ({exc}): start it with "
                "`bash scripts/services/nats.sh`"
            ) from exc
        if args.mode == "backlog":
            raw, enqueued = asyncio.run(
                raw_rate(args.nats_url, stream, subject, args.raw_count, args.events)
            )
            run = bench.run_sluice(args.workdir, env, profile=args.profile)
        else:
            sender = multiprocessing.get_context("fork").Process(
                target=send_at_rate, args=(args.nats_url, subject, payloads, args.rate)
            )
            run = bench.run_sluice(args.workdir, env, profile=args.profile, on_ready=sender.start)
            sender.join()
            raw, enqueued = asyncio.run(
                raw_rate(args.nats_url, stream, subject, args.raw_count, args.events)
            )
        run.extra["latencies"] = bench.e2e_latencies(run.batches, enqueued)
        ok = bench.report(args, run, raw, kinds, raw_label="raw nats-py fetch+ack")
        if args.profile:
            bench.print_profile(args.workdir / "sluice.prof")
    finally:
        if not args.keep:
            asyncio.run(delete_stream(args.nats_url, stream))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
