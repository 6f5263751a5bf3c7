"""IP address truncation, in SQL: IPv4 to /24, IPv6 to /48; anything else to NULL.

`truncate_ipv6` is the same /48 rule in Python (the reference the SQL is tested against).
"""

from __future__ import annotations

import socket

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4_PATTERN = rf"({_OCTET}\.){{3}}{_OCTET}"
_H = "[0-9A-Fa-f]{1,4}"
IPV6_PATTERN = (
    rf"(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,7}}:|(?:{_H}:){{1,6}}:{_H}|(?:{_H}:){{1,5}}(?::{_H}){{1,2}}|"
    rf"(?:{_H}:){{1,4}}(?::{_H}){{1,3}}|(?:{_H}:){{1,3}}(?::{_H}){{1,4}}|(?:{_H}:){{1,2}}(?::{_H}){{1,5}}|"
    rf"{_H}:(?::{_H}){{1,6}}|:(?:(?::{_H}){{1,7}}|:))"
)
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


def ipv6_48_sql(value: str) -> str:
    """SQL: the first 48 bits of the IPv6 address `value` in compressed form ('2001:db8:1::').

    `value` must already be a valid IPv6 address (IPV6_PATTERN): '::' is expanded to the
    missing zero groups, the first three groups keep no leading zeros, trailing zero groups
    fold into '::'.
    """
    head = f"split_part({value}, '::', 1)"
    tail = f"split_part({value}, '::', 2)"

    def groups(part: str) -> str:
        return f"(CASE WHEN {part} = '' THEN []::VARCHAR[] ELSE string_split({part}, ':') END)"

    expanded = (
        f"(CASE WHEN contains({value}, '::') THEN list_concat({groups(head)}, "
        f"list_transform(range(8 - len({groups(head)}) - len({groups(tail)})), lambda x: '0'), {groups(tail)}) "
        f"ELSE string_split({value}, ':') END)"
    )
    kept = f"list_transform({expanded}[1:3], lambda g: coalesce(nullif(ltrim(lower(g), '0'), ''), '0'))"
    return f"(regexp_replace(array_to_string({kept}, ':'), '^0(:0)*$|(:0)+$', '') || '::')"
