"""Imports every built-in plug-in so it registers itself (sources, steps, checks, sinks)."""

from sluiceway.checks import anomaly, drift, reconcile, table  # noqa: F401
from sluiceway.sinks import delta, parquet  # noqa: F401
from sluiceway.sinks import postgres as postgres_sink  # noqa: F401
from sluiceway.sources import api, files, mysql, postgres  # noqa: F401
from sluiceway.sources import delta as delta_source  # noqa: F401
from sluiceway.streaming import kafka, mysql_cdc, nats_js, postgres_cdc, redis_streams  # noqa: F401
from sluiceway.transforms import dedup, enrich_redis, filter, python, reshape, sql  # noqa: F401
