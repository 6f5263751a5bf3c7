"""Staging masks a PII column through a map of its distinct values only where a value costs
more to mask than a map's DISTINCT and join; the result is the same either way."""

from __future__ import annotations

import pyarrow as pa

from sluiceway import masking
from sluiceway.core.loader import parse_spec
from sluiceway.core.pii import PiiMasking
from sluiceway.engines.duckdb import DuckDBEngine

SPEC = """
version: 1
pipeline: staging_maps
sources:
  events: {type: files, path: events.csv}
pii: {email: hmac, ip: truncate_ip, name: redact}
sinks:
  - {type: delta, path: lake/out}
"""


def test_only_costly_methods_go_through_a_map() -> None:
    keys = masking.MaskKeys(hmac_key=b"k" * 32)
    engine = DuckDBEngine(threads=1)
    rows = pa.table(
        {
            "email": ["a@x.org", "a@x.org", "b@x.org"],
            "ip": ["10.1.2.3", "10.1.2.4", "2001:db8:85a3:8d3::7348"],
            "name": ["Ann", "Ann", "Bob"],
        }
    )
    source = engine.register_arrow("src", rows)
    pii = PiiMasking(parse_spec(SPEC), keys, engine)
    select, maps = pii.staging_select(source, ["email", "ip", "name"], source)
    assert [engine.columns(m)[0][0] for m in maps] == ["v"]
    assert engine.count(maps[0]) == 2  # the distinct emails
    masked = engine.fetch_arrow(select).to_pylist()
    assert [r["ip"] for r in masked] == ["10.1.2.0", "10.1.2.0", "2001:db8:85a3::"]
    assert [r["name"] for r in masked] == ["[REDACTED]"] * 3
    direct = engine.fetch_arrow(f"SELECT {pii.masked('email')} AS e FROM src").column("e")
    assert [r["email"] for r in masked] == direct.to_pylist()
    assert masked[0]["email"] == masked[1]["email"] != masked[2]["email"]
