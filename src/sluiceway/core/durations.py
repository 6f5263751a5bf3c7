"""Durations written in a spec: '500ms', '90s', '30m', '2h', '1d', '1w', combinations
('1d12h') or ISO 8601 ('PT2H', 'P1DT12H'; no years or months, whose length varies)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"w": 604_800.0, "d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
_SHORT = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|[wdhms]))+")
_SHORT_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|[wdhms])")
_ISO = re.compile(
    r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?"
    r"(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)


def parse_duration(text: str, *, what: str = "duration", allow_zero: bool = False) -> timedelta:
    """The positive duration `text` stands for.

    Args:
        text: e.g. '90s', '5m', '1h30m', '250ms', 'PT2H'.
        what: the setting's name, for the error ('max_age', 'window').
        allow_zero: '0s' is a duration too (a lag of none).

    Raises:
        ValueError: `text` is none of these forms, or is zero (unless `allow_zero`).
    """
    value = text.strip()
    seconds, matched = 0.0, False
    if _SHORT.fullmatch(value.lower()):
        seconds = sum(float(n) * _UNITS[u] for n, u in _SHORT_PART.findall(value.lower()))
        matched = True
    elif (iso := _ISO.fullmatch(value.upper())) and value.upper() not in ("P", "PT"):
        parts = iso.groupdict()
        seconds = sum(float(parts[u] or 0) * _UNITS[u.lower()] for u in parts)
        matched = True
    if not matched or seconds < 0 or (seconds == 0 and not allow_zero):
        kind = "a duration" if allow_zero else "a positive duration"
        raise ValueError(
            f"{what} '{text}' is not {kind}: write e.g. '90s', '30m', '2h', "
            "'1d', '1d12h' or ISO 8601 'PT2H'" + (" ('0s' for none)" if allow_zero else "")
        )
    return timedelta(seconds=seconds)


def parse_instant(text: str | None) -> datetime | None:
    """A compact ('20250115T020000') or ISO timestamp as UTC (naive means UTC).

    Returns:
        The instant, or None for an empty or unreadable text.
    """
    if not text:
        return None
    for parse in (lambda t: datetime.strptime(t[:15], "%Y%m%dT%H%M%S"), datetime.fromisoformat):
        try:
            instant = parse(text)
        except ValueError:
            continue
        return instant.replace(tzinfo=UTC) if instant.tzinfo is None else instant.astimezone(UTC)
    return None
