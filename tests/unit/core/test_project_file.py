"""The project file: pipelines found by folder and glob, alert routes complete, time zones
real; a wrong value is a problem with its path and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluiceway.core.loader import load_project
from sluiceway.core.project import find_project_file
from sluiceway.errors import SpecError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sluice.yaml"
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str) -> dict[str, tuple[int | None, str]]:
    with pytest.raises(SpecError) as caught:
        load_project(write(tmp_path, text))
    return {p.path: (p.line, p.message) for p in caught.value.problems}


def test_specs_are_found_by_folder_glob_and_file_without_duplicates(tmp_path: Path) -> None:
    for name in ("pipelines/a.yaml", "pipelines/b.yml", "extra/c.yaml", "extra/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("")
    project = load_project(
        write(
            tmp_path,
            "version: 1\nproject: p\npipelines: [pipelines/, 'extra/*.yaml', pipelines/a.yaml]\n",
        )
    )
    names = [p.name for p in project.spec_paths(tmp_path)]
    assert names == ["c.yaml", "a.yaml", "b.yml"]


def test_the_nearest_project_file_above_a_folder_is_found(tmp_path: Path) -> None:
    write(tmp_path, "version: 1\nproject: p\n")
    (tmp_path / "a/b").mkdir(parents=True)
    assert find_project_file(tmp_path / "a/b") == tmp_path / "sluice.yaml"


@pytest.mark.parametrize(
    ("route", "message"),
    [
        ("{name: r, type: webhook}", "needs url"),
        ("{name: r, type: command}", "needs command"),
        ("{name: r, type: pagerduty, url: 'http://x'}", "needs routing_key"),
        (
            "{name: r, type: webhook, url: 'http://x', min_interval: often}",
            "not a positive duration",
        ),
        ("{name: r, type: webhook, url: 'http://x', on: [run_faild]}", "run_failed"),
    ],
)
def test_an_incomplete_alert_route_is_a_problem_at_its_line(
    tmp_path: Path, route: str, message: str
) -> None:
    found = problems(tmp_path, f"version: 1\nproject: p\nalerts:\n  - {route}\n")
    assert any(line == 4 and message in text for line, text in found.values()), found


def test_an_unknown_time_zone_is_a_problem(tmp_path: Path) -> None:
    found = problems(tmp_path, "version: 1\nproject: p\ntimezone: Europe/Pariss\n")
    assert "unknown time zone 'Europe/Pariss'" in found["timezone"][1]


def test_a_misspelt_project_key_gets_a_suggestion(tmp_path: Path) -> None:
    from sluiceway.core.loader import load_project
    from sluiceway.errors import SpecError

    path = tmp_path / "sluice.yaml"
    path.write_text("version: 1\nproject: shop\npipelines: [pipelines/]\nmax_worker: 2\n")

    with pytest.raises(SpecError) as raised:
        load_project(path)

    assert "unknown key 'max_worker'. Did you mean 'max_workers'?" in str(raised.value)
