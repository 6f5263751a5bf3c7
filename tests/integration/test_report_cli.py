"""`sluice report` on the state folder of a real pipeline run twice."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from sluiceway.cli_report import report
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline

KEYS = {
    "SLUICE_HMAC_KEY": "report-hmac-key",
    "SLUICE_MASK_SALT": "report-salt",
    "SLUICE_ENCRYPTION_KEY": "3c" * 32,
}
AMOUNTS = {date(2025, 1, 15): [10, 150, 20, -5], date(2025, 1, 16): [10, 20, 30, 40, 50]}
SPEC: dict[str, Any] = {
    "version": 1,
    "pipeline": "orders",
    "sources": {"orders": {"type": "files", "path": "in/", "format": "csv"}},
    "steps": [{"sql": "SELECT * REPLACE (CAST(amount AS INTEGER) AS amount) FROM input"}],
    "pii": {"email": "hmac"},
    "checks": [
        {"not_null": {"column": "order_id"}},
        {"between": {"column": "amount", "min_value": 0, "max_value": 100, "severity": "warn"}},
        {"in_set": {"column": "email", "value_set": ["nobody"], "severity": "warn"}},
    ],
    "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
}


def run_day(folder: Path, spec: Path, day: date) -> RunResult:
    lines = ["order_id,amount,email"] + [
        f"o{i},{amount},buyer{i}@example.com" for i, amount in enumerate(AMOUNTS[day])
    ]
    (folder / "in").mkdir(exist_ok=True)
    (folder / "in" / "orders.csv").write_text("\n".join(lines) + "\n")
    options = RunOptions(
        logical_date=day, base_dir=folder, state_dir=folder / ".sluice", environ=KEYS
    )
    result = run_pipeline(load_spec(spec), options)
    assert result.ok, result.error
    return result


def test_report_of_two_real_runs_shows_their_accounting_checks_and_trends(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    first, second = (run_day(tmp_path, spec, day) for day in AMOUNTS)
    state, out = tmp_path / ".sluice", tmp_path / "site"

    result = CliRunner().invoke(report, [str(spec), "--state-dir", str(state), "-o", str(out)])

    assert result.exit_code == 0, result.output + result.stderr
    assert "2 run(s) on 1 index page(s); run pages: 2 written" in result.output
    index = (out / "index.html").read_text()
    assert index.index(second.run_id) < index.index(first.run_id)
    for href in re.findall(r'href="([^"]+)"', index):
        assert (out / href).is_file(), href
    page = (out / "runs" / f"{first.run_id}.html").read_text()
    acc = first.accounting
    cells = [acc.rows_in, acc.rows_written, acc.rows_rejected, acc.rows_deduplicated]
    assert "".join(f'<td class="num">{n}</td>' for n in cells) in page
    assert [c.name for c in first.checks] == [c.name for c in second.checks]
    for name in (c.name for c in first.checks):
        assert f"<td>{name}</td>" in page
    assert "<code>-5</code>" in page and "<code>150</code>" in page
    assert "2 passed, 1 failed" in (out / "runs" / f"{second.run_id}.html").read_text()
    pages = [index, page, (out / "trends" / "orders.html").read_text()]
    assert all("@example.com" not in text and "buyer" not in text for text in pages)
    trends = pages[2]
    assert "2 logical date(s)" in trends
    assert "<title>2025-01-15: failed</title>" in trends
    assert "<title>2025-01-16: passed</title>" in trends
    assert "<title>2025-01-16: written 5</title>" in trends


def test_report_of_a_spec_reads_the_run_store_of_its_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The project keeps its runs in its state_dir: `sluice report SPEC` from the spec's
    folder (or anywhere) reads them there, not in ./.sluice."""
    project = tmp_path / "shop"
    (project / "pipelines").mkdir(parents=True)
    (project / "sluice.yaml").write_text(
        "version: 1\nproject: shop\npipelines: [pipelines/]\nstate_dir: var/state\n"
    )
    spec = project / "pipelines" / "orders.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    lines = "order_id,amount,email\no1,10,a@example.com\n"
    (project / "pipelines" / "in").mkdir()
    (project / "pipelines" / "in" / "orders.csv").write_text(lines)
    options = RunOptions(
        logical_date=date(2025, 1, 15),
        base_dir=spec.parent,
        state_dir=project / "var" / "state",
        environ=KEYS,
    )
    assert run_pipeline(load_spec(spec), options).ok
    monkeypatch.chdir(spec.parent)
    monkeypatch.delenv("SLUICE_HOME", raising=False)

    done = CliRunner().invoke(report, [str(spec)])

    assert done.exit_code == 0, done.output
    assert str(project / "var" / "state" / "report" / "index.html") in done.output
    assert "1 run(s)" in done.output
    assert not (spec.parent / ".sluice").exists()
