"""The `enrich_redis` step against a real Redis (start it with
`bash scripts/services/redis.sh`; URL: SLUICE_TEST_REDIS_URL)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pydantic
import pytest
import redis

from sluiceway.core.context import RunContext
from sluiceway.errors import ConfigError, StepError, TransientError
from sluiceway.transforms import enrich_redis
from sluiceway.transforms.enrich_redis import EnrichRedisStep, EnrichRedisStepConfig

REDIS_URL = os.environ.get("SLUICE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def redis_client(redis_text: redis.Redis) -> redis.Redis:
    return redis_text


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A unique key prefix; every key under it is deleted after the test."""
    name = f"sluice-enrich-{uuid.uuid4().hex[:10]}"
    enrich_redis.clear_cache()
    yield name
    enrich_redis.clear_cache()
    keys = list(redis_client.scan_iter(match=f"{name}:*", count=10_000))
    for start in range(0, len(keys), 10_000):
        redis_client.delete(*keys[start : start + 10_000])


def config(prefix: str, **options: Any) -> EnrichRedisStepConfig:
    settings: dict[str, Any] = {
        "url": REDIS_URL,
        "key": f"{prefix}:user:{{user_id}}",
        "fields": {"segment": "user_segment", "country": "country"},
        "defaults": {"user_segment": "unknown"},
    }
    return EnrichRedisStepConfig.model_validate({**settings, **options})


def enrich(
    ctx: RunContext, cfg: EnrichRedisStepConfig, data: pa.Table
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The enriched rows (by `n`) and the `enrich_misses` event of one apply."""
    engine = ctx.engine
    table = engine.register_arrow(engine.new_name("batch"), data)
    out = EnrichRedisStep(cfg).apply(ctx, table, rows_in=data.num_rows)
    assert out.rows == data.num_rows
    assert (out.deduplicated, out.filtered) == (0, 0)
    rows = engine.fetch_arrow(f"SELECT * FROM {out.table} ORDER BY n").to_pylist()
    events = [e for e in ctx.events.history if e.name == "enrich_misses"]
    return rows, events[-1].fields


def users(*user_ids: int | None) -> pa.Table:
    return pa.table({"n": list(range(len(user_ids))), "user_id": list(user_ids)})


def hmget_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_hmget", {}).get("calls", 0))


def test_rows_get_fields_defaults_and_counted_misses(
    ctx: RunContext, redis_client: redis.Redis, prefix: str
):
    redis_client.hset(f"{prefix}:user:1", mapping={"segment": "gold", "country": "FR"})
    redis_client.hset(f"{prefix}:user:2", mapping={"segment": "silver"})

    rows, event = enrich(ctx, config(prefix), users(1, 2, 3, None, 1))

    assert [(r["user_id"], r["user_segment"], r["country"]) for r in rows] == [
        (1, "gold", "FR"),
        (2, "silver", None),
        (3, "unknown", None),
        (None, "unknown", None),
        (1, "gold", "FR"),
    ]
    assert event["rows"] == 5
    assert event["rows_without_hash"] == 2
    assert event["field_misses"] == {"user_segment": 2, "country": 3}
    assert (event["keys"], event["fetched"], event["cache_hits"]) == (3, 3, 0)


def test_key_template_over_several_columns(ctx: RunContext, redis_client: redis.Redis, prefix: str):
    redis_client.hset(f"{prefix}:acme:7", mapping={"plan": "pro"})
    redis_client.hset(f"{prefix}:globex:7", mapping={"plan": "free"})
    cfg = EnrichRedisStepConfig.model_validate(
        {"url": REDIS_URL, "key": f"{prefix}:{{tenant}}:{{user_id}}", "fields": {"plan": "plan"}}
    )
    data = pa.table({"n": [0, 1, 2], "tenant": ["acme", "globex", "initech"], "user_id": [7] * 3})

    rows, event = enrich(ctx, cfg, data)

    assert [r["plan"] for r in rows] == ["pro", "free", None]
    assert event["field_misses"] == {"plan": 1}


def test_second_call_is_served_by_the_cache_without_asking_redis(
    make_ctx: Any, redis_client: redis.Redis, prefix: str
):
    redis_client.hset(f"{prefix}:user:1", mapping={"segment": "gold"})
    cfg = config(prefix)
    enrich(make_ctx(), cfg, users(1, 2))
    redis_client.hset(f"{prefix}:user:1", mapping={"segment": "changed"})
    redis_client.hset(f"{prefix}:user:2", mapping={"segment": "new"})
    calls_before = hmget_calls(redis_client)

    rows, event = enrich(make_ctx(), cfg, users(1, 2))

    assert hmget_calls(redis_client) == calls_before
    assert [r["user_segment"] for r in rows] == ["gold", "unknown"]
    assert (event["cache_hits"], event["fetched"], event["round_trips"]) == (2, 0, 0)


def test_cached_answers_expire_after_the_ttl(make_ctx: Any, redis_client: redis.Redis, prefix: str):
    redis_client.hset(f"{prefix}:user:1", mapping={"segment": "gold"})
    cfg = config(prefix, cache_ttl_s=0.3)
    enrich(make_ctx(), cfg, users(1))
    redis_client.hset(f"{prefix}:user:1", mapping={"segment": "platinum"})
    time.sleep(0.4)

    rows, event = enrich(make_ctx(), cfg, users(1))

    assert rows[0]["user_segment"] == "platinum"
    assert (event["cache_hits"], event["fetched"]) == (0, 1)


def test_key_that_is_not_a_hash_is_a_miss(ctx: RunContext, redis_client: redis.Redis, prefix: str):
    redis_client.set(f"{prefix}:user:5", "not a hash")

    rows, event = enrich(ctx, config(prefix), users(5))

    assert rows[0]["user_segment"] == "unknown"
    assert (event["wrong_type"], event["rows_without_hash"]) == (1, 1)


def test_lookups_are_pipelined_in_chunks_of_batch_size(
    ctx: RunContext, redis_client: redis.Redis, prefix: str
):
    rows, event = enrich(ctx, config(prefix, batch_size=4), users(*range(10)))

    assert event["round_trips"] == 3
    assert [r["user_segment"] for r in rows] == ["unknown"] * 10


def test_redis_down_is_transient_and_says_how_to_start_it(ctx: RunContext, prefix: str):
    cfg = config(prefix, url="redis://127.0.0.1:1/0", timeout_s=1)
    with pytest.raises(TransientError, match=r"`bash scripts/services/redis\.sh`"):
        enrich(ctx, cfg, users(1))


def test_output_column_that_exists_is_refused(ctx: RunContext, prefix: str):
    data = pa.table({"n": [0], "user_id": [1], "country": ["FR"]})
    with pytest.raises(StepError, match="country, already a column"):
        enrich(ctx, config(prefix), data)


def test_template_column_that_does_not_exist_is_refused(ctx: RunContext, prefix: str):
    with pytest.raises(StepError, match="names account_id, not a column"):
        enrich(ctx, config(prefix, key=f"{prefix}:{{account_id}}"), users(1))


def test_unset_password_variable_is_a_config_error(ctx: RunContext, prefix: str):
    cfg = config(prefix, password_env="SLUICE_TEST_UNSET_REDIS_PASSWORD")
    os.environ.pop("SLUICE_TEST_UNSET_REDIS_PASSWORD", None)
    with pytest.raises(ConfigError, match=r"\$SLUICE_TEST_UNSET_REDIS_PASSWORD"):
        enrich(ctx, cfg, users(1))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": "redis://:secret@127.0.0.1:6379/0"}, "must not contain a password"),
        ({"key": "user:id"}, "names no column"),
        ({"key": "user:{user_id!r}"}, "must be a plain column name"),
        ({"defaults": {"segment": "x"}}, "defaults name segment"),
    ],
)
def test_invalid_config_is_refused(options: dict[str, Any], message: str):
    with pytest.raises(pydantic.ValidationError, match=message):
        config("p", **options)


def test_hundred_thousand_rows(make_ctx: Any, redis_client: redis.Redis, prefix: str):
    distinct = 20_000
    pipe = redis_client.pipeline(transaction=False)
    for user in range(0, distinct, 2):
        pipe.hset(f"{prefix}:user:{user}", mapping={"segment": f"s{user % 5}", "country": "DE"})
    pipe.execute()
    data = pa.table({"n": range(100_000), "user_id": [i % distinct for i in range(100_000)]})
    cfg = config(prefix)

    started = time.perf_counter()
    rows, event = enrich(make_ctx(), cfg, data)
    cold = time.perf_counter() - started
    started = time.perf_counter()
    _, cached = enrich(make_ctx(), cfg, data)
    warm = time.perf_counter() - started
    print(f"enrich_redis 100k rows, {distinct} keys: cold {cold:.2f}s, cached {warm:.2f}s")

    assert len(rows) == 100_000
    assert (rows[4]["user_segment"], rows[4]["country"]) == ("s4", "DE")
    assert (rows[5]["user_segment"], rows[5]["country"]) == ("unknown", None)
    assert event["rows_without_hash"] == 50_000
    assert (event["fetched"], event["round_trips"]) == (distinct, distinct // 1_000)
    assert (cached["cache_hits"], cached["fetched"]) == (distinct, 0)
    assert cold < 20 and warm < 10
