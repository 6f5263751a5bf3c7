"""IP address truncation: IPv4 to /24 in SQL, IPv6 to /48 in a vectorized Python UDF."""

from __future__ import annotations

import socket

import pyarrow as pa

from sluiceway.masking.arrow import map_distinct

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"({_OCTET}\.){{3}}{_OCTET}"
_KEPT_HEXTETS = 3


def truncate_ipv6(value: str) -> str | None:
    """Keep the first 48 bits of an IPv6 address in RFC 5952 compressed form.

    "2001:db8:85a3:8d3::7348" -> "2001:db8:85a3::", "::1" -> "::". Anything that is not
    a plain IPv6 address (including scoped ones like "fe80::1%eth0") gives None.
    """
    try:
        packed = socket.inet_pton(socket.AF_INET6, value)
    except (OSError, ValueError):
        return None
    hextets = [int.from_bytes(packed[i : i + 2], "big") for i in range(0, 2 * _KEPT_HEXTETS, 2)]
    while hextets and hextets[-1] == 0:
        hextets.pop()
    return ":".join(f"{h:x}" for h in hextets) + "::"


def truncate_ipv6_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Apply truncate_ipv6 to every non-null string of `values`; nulls stay null."""
    return map_distinct(values, truncate_ipv6)
