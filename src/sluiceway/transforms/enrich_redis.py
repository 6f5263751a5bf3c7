"""The `enrich_redis` step: add columns from Redis hashes, looked up by a key built per row.

The distinct keys of the batch that the process-wide cache lacks are fetched with pipelined
HMGET, `batch_size` keys per round trip; the answers (and the keys without a hash, so they
are not asked again within `cache_ttl_s`) join the cache as one Arrow table, and the rows are
LEFT JOINed to them in DuckDB. A missing hash or field gives the column's default and is
counted (event `enrich_misses`), never an error; the row count never changes.
"""

from __future__ import annotations

import contextlib
import os
import string
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, cast
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import redis
from pydantic import Field, field_validator, model_validator
from redis.backoff import NoBackoff
from redis.retry import Retry

from sluiceway.connectors.redis import check_url
from sluiceway.core import registry
from sluiceway.core.context import RunContext, StepOutput
from sluiceway.core.events import EventName
from sluiceway.core.spec import StepConfig
from sluiceway.engines.duckdb import DuckDBEngine, quote_ident, quote_literal
from sluiceway.errors import ConfigError, StepError, TransientError

START_SCRIPT = "bash scripts/services/redis.sh"
KEY = "__sw_key"
FOUND = "__sw_found"
ROWS = "__sw_rows"
_MISSES = cast(EventName, "enrich_misses")
_CACHES: dict[tuple[str, tuple[str, ...]], _Cache] = {}
_CLIENTS: dict[tuple[str, str | None], redis.Redis] = {}
_LOCK = threading.Lock()


class EnrichRedisStepConfig(StepConfig):
    """Columns from Redis hashes: the hash at `key` (built from the row), fields renamed."""

    key: ClassVar[str] = "enrich_redis"
    url: str = Field(
        "redis://127.0.0.1:6379/0",
        description="redis://[user@]host:port/db, rediss:// (TLS) or unix://path; "
        "never a password (use password_env).",
    )
    password_env: str | None = Field(
        None, description="Name of the environment variable that holds the Redis password."
    )
    key_template: str = Field(
        alias="key",
        description="The hash key, with columns in braces: 'user:{user_id}', "
        "'{tenant}:{user_id}' (values as DuckDB casts them to text).",
    )
    fields: dict[str, str] = Field(
        min_length=1, description="Hash field → output column (text; cast it in a later step)."
    )
    defaults: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Output column → value when the hash or the field is missing (else NULL).",
    )
    cache_ttl_s: float = Field(
        60.0, ge=0, description="How long this process reuses an answer (0: never cache)."
    )
    batch_size: int = Field(1_000, ge=1, description="Keys asked per pipelined round trip.")
    timeout_s: float = Field(5.0, gt=0, description="Connect and reply timeout of Redis.")

    @field_validator("url")
    @classmethod
    def _url_has_no_password(cls, url: str) -> str:
        return check_url(url)

    @field_validator("key_template")
    @classmethod
    def _template_names_columns(cls, template: str) -> str:
        columns = template_columns(template)
        if not columns:
            raise ValueError(f"key '{template}' names no column: write e.g. 'user:{{user_id}}'")
        return template

    @model_validator(mode="after")
    def _defaults_name_outputs(self) -> EnrichRedisStepConfig:
        outputs = list(self.fields.values())
        if len(set(outputs)) != len(outputs):
            raise ValueError("fields maps two hash fields to the same output column")
        unknown = sorted(set(self.defaults) - set(outputs))
        if unknown:
            raise ValueError(
                f"defaults name {', '.join(unknown)}, which no field produces: defaults are "
                f"keyed by output column ({', '.join(outputs)})"
            )
        return self


def template_columns(template: str) -> list[str]:
    """The columns a key template names, in order.

    Raises:
        ValueError: a placeholder is empty, positional, or has a format spec or conversion.
    """
    columns = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(
                f"key '{template}': placeholder {{{name}}} must be a plain column name"
            )
        columns.append(name)
    return columns


@dataclass
class _Lookup:
    """What one batch needed from Redis: the answers for its keys, and how they came."""

    table: pa.Table
    keys: int
    cache_hits: int
    round_trips: int
    wrong_type: int


class EnrichRedisStep:
    """Looks the batch's keys up once each (cache first) and joins the answers."""

    def __init__(self, config: EnrichRedisStepConfig) -> None:
        self.config = config
        self.hash_fields = list(config.fields)
        self.values = [f"__sw_v{i}" for i in range(len(self.hash_fields))]
        self.schema = pa.schema(
            [(KEY, pa.string()), (FOUND, pa.bool_())] + [(v, pa.string()) for v in self.values]
        )

    def apply(self, ctx: RunContext, table: str, *, rows_in: int | None = None) -> StepOutput:
        """Add the `fields` columns to every row; the row count never changes.

        Raises:
            TransientError: Redis cannot be reached (the runner retries the batch).
            StepError: a template column is missing, an output column exists already, or
                Redis refused the credentials or a command.
            ConfigError: `password_env` names a variable that is not set.
        """
        engine = ctx.engine
        key_sql = self._key_sql(engine, table)
        counted = engine.fetch_arrow(
            f"SELECT {key_sql} AS {KEY}, count(*) AS {ROWS} FROM {quote_ident(table)} t "
            "GROUP BY ALL",
            purpose="distinct enrichment keys",
        )
        keys = counted.column(KEY).drop_null()
        lookup = self._lookup(keys)
        answers = engine.register_view(engine.new_name("enrich_answers"), lookup.table)
        joined = f"{quote_ident(table)} t LEFT JOIN {quote_ident(answers)} a ON {key_sql} = a.{KEY}"
        out = engine.create_view(
            engine.new_name("enrich_redis"),
            f"SELECT t.*, {', '.join(self._outputs())} FROM {joined}",
            purpose="join the Redis answers",
        )
        self._count_misses(ctx, counted, lookup, rows_in)
        return StepOutput(out, rows=rows_in)

    def _key_sql(self, engine: DuckDBEngine, table: str) -> str:
        present = {c for c, _ in engine.columns(table)}
        columns = template_columns(self.config.key_template)
        absent = [c for c in columns if c not in present]
        if absent:
            raise StepError(
                f"enrich_redis key '{self.config.key_template}' names {', '.join(absent)}, "
                f"not a column of the step's input (columns: {', '.join(sorted(present))})"
            )
        clash = sorted(set(self.config.fields.values()) & present)
        if clash:
            raise StepError(
                f"enrich_redis would add {', '.join(clash)}, already a column of the input: "
                "map the field to another output column in `fields`"
            )
        parts = []
        for literal, name, _, _ in string.Formatter().parse(self.config.key_template):
            if literal:
                parts.append(quote_literal(literal))
            if name is not None:
                parts.append(f"CAST(t.{quote_ident(name)} AS VARCHAR)")
        return "(" + " || ".join(parts) + ")"

    def _outputs(self) -> list[str]:
        outputs = []
        for value, column in zip(self.values, self.config.fields.values(), strict=True):
            default = self.config.defaults.get(column)
            fallback = "NULL" if default is None else quote_literal(_text(default))
            outputs.append(f"coalesce(a.{value}, {fallback}) AS {quote_ident(column)}")
        return outputs

    def _lookup(self, keys: pa.ChunkedArray) -> _Lookup:
        """Answers for `keys`: the cached ones, and the rest fetched now (then cached)."""
        cache = _cache(self.config.url, self.hash_fields)
        cached = cache.live(self.schema)
        cached = cached.filter(pc.is_in(cached.column(KEY), value_set=keys.combine_chunks()))
        known = cached.column(KEY).combine_chunks()
        missing = keys.filter(pc.invert(pc.is_in(keys, value_set=known)))
        fetched, round_trips, wrong_type = self._fetch(missing.to_pylist())
        if self.config.cache_ttl_s > 0 and fetched.num_rows:
            cache.add(fetched, ttl_s=self.config.cache_ttl_s)
        return _Lookup(
            table=pa.concat_tables([cached, fetched]),
            keys=len(keys),
            cache_hits=cached.num_rows,
            round_trips=round_trips,
            wrong_type=wrong_type,
        )

    def _fetch(self, keys: list[str]) -> tuple[pa.Table, int, int]:
        """HMGET every key, `batch_size` per pipeline; (answers, round trips, wrong types)."""
        columns: list[list[str | None]] = [[] for _ in self.hash_fields]
        found: list[bool] = []
        wrong_type = round_trips = 0
        if keys:
            client = _client(self.config)
            size = self.config.batch_size
            for start in range(0, len(keys), size):
                with self._redis_errors():
                    pipe = client.pipeline(transaction=False)
                    for key in keys[start : start + size]:
                        pipe.hmget(key, self.hash_fields)
                    replies = pipe.execute(raise_on_error=False)
                round_trips += 1
                wrong_type += self._collect(replies, columns, found)
        arrays = [pa.array(keys, pa.string()), pa.array(found, pa.bool_())]
        arrays += [pa.array(c, pa.string()) for c in columns]
        return pa.Table.from_arrays(arrays, schema=self.schema), round_trips, wrong_type

    def _collect(
        self, replies: list[Any], columns: list[list[str | None]], found: list[bool]
    ) -> int:
        """Append the replies to the columns; the number of keys that are not hashes."""
        wrong_type = 0
        blank = [None] * len(columns)
        for reply in replies:
            if isinstance(reply, redis.ResponseError):
                if not str(reply).startswith("WRONGTYPE"):
                    raise StepError(f"Redis refused HMGET at {self._where()}: {reply}")
                wrong_type += 1
                reply = blank
            found.append(any(v is not None for v in reply))
            for column, value in zip(columns, reply, strict=True):
                column.append(value)
        return wrong_type

    def _count_misses(
        self, ctx: RunContext, counted: pa.Table, lookup: _Lookup, rows_in: int | None
    ) -> None:
        """Count the rows without a hash and without each field from the rows per key (no
        second pass over the batch); emit `enrich_misses`."""
        outputs = list(self.config.fields.values())
        answers = lookup.table
        if pc.count_distinct(answers.column(KEY)).as_py() != answers.num_rows:
            raise StepError(
                "enrich_redis answers hold a key twice: the join would repeat rows "
                "(please report it)"
            )
        per_key = counted.column(ROWS)
        rows = int(pc.sum(per_key).as_py() or 0)
        if rows_in is not None and rows != rows_in:
            raise StepError(f"enrich_redis counted {rows} rows of {rows_in} (please report it)")
        where = pc.index_in(counted.column(KEY), value_set=answers.column(KEY))

        def rows_lacking(column: str, *, found: bool = False) -> int:
            values = answers.column(column).take(where)
            lacking = pc.invert(values.fill_null(False)) if found else pc.is_null(values)
            return int(pc.sum(per_key.filter(lacking)).as_py() or 0)

        misses = [rows_lacking(v) for v in self.values]
        ctx.events.emit(
            _MISSES,
            step="enrich_redis",
            rows=rows,
            rows_without_hash=rows_lacking(FOUND, found=True),
            field_misses=dict(zip(outputs, misses, strict=True)),
            keys=lookup.keys,
            cache_hits=lookup.cache_hits,
            fetched=lookup.keys - lookup.cache_hits,
            round_trips=lookup.round_trips,
            wrong_type=lookup.wrong_type,
        )

    def _where(self) -> str:
        parts = urlsplit(self.config.url)
        return parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"

    @contextlib.contextmanager
    def _redis_errors(self) -> Iterator[None]:
        """Retry connection trouble (TransientError); fail on refused credentials."""
        try:
            yield
        except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
            raise StepError(
                f"Redis at {self._where()} refused the credentials of enrich_redis: {exc}. "
                "Check the user in `url` and the variable named by `password_env`."
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            _forget_client(self.config)
            raise TransientError(
                f"Redis unreachable at {self._where()} for enrich_redis: {exc}. "
                f"Is it running? Start it with `{START_SCRIPT}`, or fix `url`."
            ) from exc


class _Cache:
    """Answers by key for one Redis and one list of fields: tables that expire whole."""

    def __init__(self) -> None:
        self.generations: list[tuple[float, pa.Table]] = []

    def live(self, schema: pa.Schema) -> pa.Table:
        """Every answer not expired (expired tables are dropped)."""
        now = time.monotonic()
        with _LOCK:
            self.generations = [(t, g) for t, g in self.generations if t > now]
            tables = [g for _, g in self.generations]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def add(self, answers: pa.Table, *, ttl_s: float) -> None:
        with _LOCK:
            self.generations.append((time.monotonic() + ttl_s, answers))


def _cache(url: str, hash_fields: list[str]) -> _Cache:
    with _LOCK:
        return _CACHES.setdefault((url, tuple(hash_fields)), _Cache())


def clear_cache() -> None:
    """Forget every cached answer of this process (tests, or a config reload)."""
    with _LOCK:
        _CACHES.clear()


def _client(config: EnrichRedisStepConfig) -> redis.Redis:
    ident = (config.url, config.password_env)
    with _LOCK:
        client = _CLIENTS.get(ident)
    if client is not None:
        return client
    password = None
    if config.password_env is not None:
        password = os.environ.get(config.password_env)
        if password is None:
            raise ConfigError(
                f"enrich_redis password_env names ${config.password_env}, which is not set: "
                "export it before running"
            )
    client = redis.Redis.from_url(
        config.url,
        password=password,
        protocol=2,
        decode_responses=True,
        encoding_errors="replace",
        socket_connect_timeout=config.timeout_s,
        socket_timeout=config.timeout_s,
        retry=Retry(NoBackoff(), 0),
        client_name="sluice:enrich_redis",
    )
    with _LOCK:
        return _CLIENTS.setdefault(ident, client)


def _forget_client(config: EnrichRedisStepConfig) -> None:
    with _LOCK:
        client = _CLIENTS.pop((config.url, config.password_env), None)
    if client is not None:
        with contextlib.suppress(Exception):
            client.close()


def _text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


registry.register("step", "enrich_redis", EnrichRedisStepConfig, EnrichRedisStep)
