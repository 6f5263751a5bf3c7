"""Fill a Redis stream with clickstream events (some defective) and load the lookup hashes.

    python examples/clickstream_stream/produce.py --count 100000 --rate 5000

loads `user:<id>` (field `segment`) and `product:<id>` (fields `category`, `price`) hashes,
then adds `--count` events to the stream (`--stream`, default `$CLICKSTREAM_STREAM` or
`clickstream`) in the `data` field, `--rate` per second or as fast as possible (`--rate 0`).
A share of them (`--defects`) is defective, evenly of four kinds:

- `malformed_json`: the payload is not JSON (a parse dead letter);
- `bad_event_type`: an event type outside the contract's values (a contract dead letter);
- `negative_price`: a price below 0 (a contract dead letter);
- `duplicate`: an earlier valid event sent again, up to 5,000 events later (deduplicated).

About 2% of events come from users without a hash (segment `unknown`). Everything is drawn
from a seeded generator, so the same arguments give the same events except `event_time`,
which is the time of sending. The counts go to stdout as JSON (and to `--manifest FILE`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

EVENT_TYPES = ("page_view", "add_to_cart", "purchase", "search")
EVENT_WEIGHTS = (0.6, 0.2, 0.1, 0.1)
SEGMENTS = ("new", "regular", "vip")
CATEGORIES = ("books", "electronics", "garden", "toys", "fashion", "grocery")
DEFECTS = ("malformed_json", "bad_event_type", "negative_price", "duplicate")
DUPLICATE_REACH = 5_000
CHUNK = 5_000


@dataclass
class Manifest:
    """What a run of the producer sent, by kind; `valid` events are distinct and clean."""

    stream: str
    events: int = 0
    valid: int = 0
    malformed_json: int = 0
    bad_event_type: int = 0
    negative_price: int = 0
    duplicate: int = 0
    unknown_user: int = 0
    users: int = 0
    products: int = 0
    seconds: float = 0.0
    events_per_s: float = 0.0
    first_id: str | None = None
    last_id: str | None = None


def segment_of(user: int) -> str:
    """The segment stored in `user:u<user>` (users 1..N have a hash)."""
    return SEGMENTS[user % len(SEGMENTS)]


def product_of(product: int) -> tuple[str, float]:
    """The category and list price stored in `product:p<product>`."""
    return CATEGORIES[product % len(CATEGORIES)], round(5 + (product * 37 % 1_000) / 4, 2)


def load_hashes(client: redis.Redis, *, users: int, products: int) -> None:
    """HSET the `user:u<n>` and `product:p<n>` hashes the pipeline enriches from."""
    pipe = client.pipeline(transaction=False)
    for n in range(1, users + 1):
        pipe.hset(f"user:u{n}", mapping={"segment": segment_of(n)})
        if n % CHUNK == 0:
            pipe.execute()
    for n in range(1, products + 1):
        category, price = product_of(n)
        pipe.hset(f"product:p{n}", mapping={"category": category, "price": str(price)})
        if n % CHUNK == 0:
            pipe.execute()
    pipe.execute()


class EventMaker:
    """Makes payloads and remembers which kind each is (seeded, except for the times)."""

    def __init__(self, *, users: int, products: int, defects: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.users, self.products, self.defects = users, products, defects
        self.recent: list[bytes] = []
        self.run = uuid.UUID(int=self.rng.getrandbits(128)).hex[:8]
        self.next = 0
        self.is_unknown_user = False

    def make(self, now: str) -> tuple[bytes, str]:
        """One payload and its kind ('valid' or a defect)."""
        rng = self.rng
        kind: str = "valid"
        if rng.random() < self.defects:
            kind = DEFECTS[rng.randrange(len(DEFECTS))]
            if kind == "duplicate" and not self.recent:
                kind = "valid"
        if kind == "duplicate":
            return self.recent[rng.randrange(len(self.recent))], kind
        if kind == "malformed_json":
            self.next += 1
            return f'{{"event_id": "e-{self.run}-{self.next}", "user_id": '.encode(), kind
        event = self._event(now)
        if kind == "bad_event_type":
            event["event_type"] = rng.choice(("click", "PageView", "checkout"))
        elif kind == "negative_price":
            event["event_type"], event["price"] = "purchase", -round(rng.uniform(1, 50), 2)
        payload = json.dumps(event, separators=(",", ":")).encode()
        if kind == "valid":
            self._remember(payload)
        return payload, kind

    def _event(self, now: str) -> dict[str, Any]:
        rng = self.rng
        self.next += 1
        user = rng.randint(1, self.users + max(1, self.users // 50))
        self.is_unknown_user = user > self.users
        event_type = rng.choices(EVENT_TYPES, EVENT_WEIGHTS)[0]
        product = None if event_type == "search" else rng.randint(1, self.products)
        price = None if product is None else product_of(product)[1]
        if price is not None and event_type == "purchase":
            price = round(price * rng.choice((1.0, 0.9, 0.8)), 2)
        return {
            "event_id": f"e-{self.run}-{self.next}",
            "user_id": f"u{user}",
            "event_type": event_type,
            "product_id": None if product is None else f"p{product}",
            "price": price,
            "email": f"u{user}@example.com",
            "ip": f"10.{user % 256}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
            "event_time": now,
        }

    def _remember(self, payload: bytes) -> None:
        if len(self.recent) < DUPLICATE_REACH:
            self.recent.append(payload)
        else:
            self.recent[self.rng.randrange(DUPLICATE_REACH)] = payload


def chunks(count: int, rate: float) -> Iterator[int]:
    """Sizes of successive XADD pipelines, sleeping so that `rate` events/s hold on average."""
    size = CHUNK if rate <= 0 else max(1, min(CHUNK, int(rate / 20)))
    started, sent = time.monotonic(), 0
    while sent < count:
        n = min(size, count - sent)
        if rate > 0:
            due = started + sent / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        yield n
        sent += n


def send(
    client: redis.Redis, stream: str, payloads: list[bytes], *, rate: float = 0.0
) -> tuple[str, str]:
    """XADD payloads made beforehand at `rate` events/s (0: as fast as possible).

    Returns:
        The ids of the first and the last entry added.
    """
    first = last = ""
    sent = 0
    for size in chunks(len(payloads), rate):
        pipe = client.pipeline(transaction=False)
        for payload in payloads[sent : sent + size]:
            pipe.execute_command("XADD", stream, "*", "data", payload)
        ids = pipe.execute()
        first, last = first or ids[0].decode(), ids[-1].decode()
        sent += size
    return first, last


def produce(
    client: redis.Redis,
    stream: str,
    *,
    count: int,
    rate: float = 0.0,
    defects: float = 0.05,
    users: int = 10_000,
    products: int = 2_000,
    seed: int = 7,
) -> Manifest:
    """Load the hashes, then XADD `count` events to `stream`; what was sent, by kind."""
    load_hashes(client, users=users, products=products)
    maker = EventMaker(users=users, products=products, defects=defects, seed=seed)
    manifest = Manifest(stream=stream, users=users, products=products)
    kinds = dict.fromkeys(("valid", *DEFECTS), 0)
    started = time.monotonic()
    for size in chunks(count, rate):
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        pipe = client.pipeline(transaction=False)
        for _ in range(size):
            payload, kind = maker.make(now)
            kinds[kind] += 1
            if kind == "valid" and maker.is_unknown_user:
                manifest.unknown_user += 1
            pipe.execute_command("XADD", stream, "*", "data", payload)
        ids = pipe.execute()
        manifest.first_id = manifest.first_id or ids[0].decode()
        manifest.last_id = ids[-1].decode()
    manifest.seconds = round(time.monotonic() - started, 3)
    manifest.events = count
    manifest.valid = kinds["valid"]
    for defect in DEFECTS:
        setattr(manifest, defect, kinds[defect])
    manifest.events_per_s = round(count / max(manifest.seconds, 1e-9))
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument(
        "--stream", default=os.environ.get("CLICKSTREAM_STREAM", "clickstream"), help="stream key"
    )
    parser.add_argument("--count", type=int, default=100_000, help="events to send")
    parser.add_argument("--rate", type=float, default=0.0, help="events/s (0: as fast as possible)")
    parser.add_argument("--defects", type=float, default=0.05, help="share of defective events")
    parser.add_argument("--users", type=int, default=10_000, help="users with a hash")
    parser.add_argument("--products", type=int, default=2_000, help="products with a hash")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--reset", action="store_true", help="delete the stream first")
    parser.add_argument("--manifest", type=Path, help="also write the counts to this file")
    args = parser.parse_args(argv)
    client = redis.Redis.from_url(args.url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        print(f"Redis not reachable at {args.url} ({exc}): start it with "
              "`bash scripts/services/redis.sh`", file=sys.stderr)  # fmt: skip
        return 2
    if args.reset:
        client.delete(args.stream)
    manifest = produce(
        client,
        args.stream,
        count=args.count,
        rate=args.rate,
        defects=args.defects,
        users=args.users,
        products=args.products,
        seed=args.seed,
    )
    text = json.dumps(asdict(manifest), indent=2)
    if args.manifest:
        args.manifest.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
