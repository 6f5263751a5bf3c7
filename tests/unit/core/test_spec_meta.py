"""What a spec declares besides its data flow: volumes, percentages, durations and tiers are
parsed, and a wrong one is a spec problem with its path and line."""

from __future__ import annotations

import textwrap

import pytest

from sluiceway.core.loader import parse_spec
from sluiceway.core.spec_meta import parse_percent, parse_volume
from sluiceway.errors import SpecError

SPEC = textwrap.dedent(
    """\
    version: 1
    pipeline: events
    layer: {layer}
    sources:
      events:
        type: files
        path: data/*.csv
        format: csv
        inventory: {{volume: "{volume}", freshness: 1h, owner: web, access_pattern: full}}
    sinks:
      - type: delta
        path: lake/events
        partition_by: [day]
        tiers: {tiers}
    sla: {{latency: 30m, freshness: 1d, availability: "{availability}"}}
    compliance: {{retention: 400d, subject_key: user_id}}
    retries: {{max_attempts: 3, backoff: 10s}}
    timeout: {timeout}
    """
)
GOOD = {
    "layer": "silver",
    "volume": "2M rows/day",
    "tiers": "[{name: warm, path: lake/warm, after: 30d}, {name: cold, path: lake/cold, after: 365d}]",
    "availability": "99.9%",
    "timeout": "2h",
}


def problems_of(**changes: str) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC.format(**{**GOOD, **changes}), environ={})
    return {p.path: (p.line, p.message) for p in caught.value.problems}


@pytest.mark.parametrize(
    ("text", "rows", "size"),
    [
        ("100000/s", 8_640_000_000, None),
        ("2M rows/day", 2_000_000, None),
        ("1.5k events/min", 2_160_000, None),
        ("3 rows/hours", 72, None),
        ("40GB/day", None, 40e9),
        ("7 MB/week", None, 1e6),
    ],
)
def test_a_volume_is_rows_or_bytes_per_day(
    text: str, rows: float | None, size: float | None
) -> None:
    volume = parse_volume(text)
    assert volume.rows_per_day == (pytest.approx(rows) if rows is not None else None)
    assert volume.bytes_per_day == (pytest.approx(size) if size is not None else None)


def test_a_volume_in_rows_is_stored_at_the_declared_bytes_per_row() -> None:
    assert parse_volume("1000/day").stored_bytes_per_day(250) == 250_000
    assert parse_volume("1000/day").stored_bytes_per_day(None) == 100_000


@pytest.mark.parametrize("text", ["lots", "5/fortnight", "12", "3 apples/day"])
def test_something_that_is_not_a_rate_is_refused_with_an_example(text: str) -> None:
    with pytest.raises(ValueError, match=r"e\.g\. '100000/s'"):
        parse_volume(text)


def test_percentages_are_fractions_however_written() -> None:
    assert [parse_percent(v) for v in ("99.9%", 99.9, 0.999)] == pytest.approx([0.999] * 3)
    with pytest.raises(ValueError, match=r"99\.9%"):
        parse_percent("high")


def test_a_complete_declaration_loads() -> None:
    pipeline = parse_spec(SPEC.format(**GOOD), environ={})
    assert pipeline.layer == "silver"
    assert pipeline.sources["events"].inventory.volume == "2M rows/day"
    assert [t.name for t in pipeline.sinks[0].tiers] == ["warm", "cold"]
    assert pipeline.retries.max_attempts == 3 and pipeline.timeout == "2h"


def test_a_bad_volume_is_a_problem_at_its_path_and_line() -> None:
    line, message = problems_of(volume="fast")["sources.events.inventory.volume"]
    assert line == 9 and "not a rate" in message


def test_an_unknown_layer_is_a_problem() -> None:
    assert "bronze" in problems_of(layer="platinum")["layer"][1]


def test_a_bad_availability_and_timeout_are_problems() -> None:
    problems = problems_of(availability="always", timeout="soon")
    assert "not a percentage" in problems["sla.availability"][1]
    assert "not a positive duration" in problems["timeout"][1]


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        (
            "[{name: cold, path: c, after: 365d}, {name: warm, path: w, after: 30d}]",
            "youngest to oldest",
        ),
        ("[{name: hot, path: c, after: 365d}]", "not 'hot'"),
        ("[{name: warm, path: w, after: 30d}, {name: warm, path: c, after: 365d}]", "unique"),
        ("[{name: warm, path: w, after: whenever}]", "not a positive duration"),
    ],
)
def test_tiers_out_of_order_or_ambiguous_are_refused(tiers: str, message: str) -> None:
    problems = problems_of(tiers=tiers)
    assert any(message in text for _, text in problems.values()), problems
