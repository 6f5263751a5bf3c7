"""Durations in specs: '90s', '1h30m', ISO 8601; zero only where a setting allows it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sluiceway.core.durations import parse_duration
from sluiceway.sources.mysql import MySQLSourceConfig
from sluiceway.sources.postgres import PostgresSourceConfig


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("1h30m", 5400), ("250ms", 0.25), ("PT2H", 7200)]
)
def test_short_and_iso_forms_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0s", "abc", "", "P"])
def test_zero_and_nonsense_are_refused_naming_the_setting(text: str) -> None:
    with pytest.raises(ValueError, match=r"window '.*' is not a positive duration"):
        parse_duration(text, what="window")


def test_zero_is_a_duration_where_allowed_but_nonsense_still_is_not() -> None:
    assert parse_duration("0s", allow_zero=True) == timedelta(0)
    with pytest.raises(ValueError, match="'0s' for none"):
        parse_duration("soon", what="lag", allow_zero=True)


@pytest.mark.parametrize(
    ("config", "login"),
    [(PostgresSourceConfig, {}), (MySQLSourceConfig, {"user": "u", "database": "d"})],
)
def test_a_lag_of_0s_means_no_lag(config: type, login: dict[str, str]) -> None:
    spec = {"table": "t", "mode": "incremental", "cursor": "c", "primary_key": ["id"], **login}
    assert config.model_validate({**spec, "lag": "0s"}).lag == "0s"
    with pytest.raises(ValueError, match="not a duration"):
        config.model_validate({**spec, "lag": "later"})
