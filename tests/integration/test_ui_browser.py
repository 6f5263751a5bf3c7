"""`sluice ui` in a real headless Chromium: from the overview through a run with rejected
rows to its dead letters, then a replay after the spec is fixed on disk.

Needs Debian's chromium at /usr/bin/chromium (driven by Playwright with the system browser).
Screenshots go to $SLUICE_TEST_ARTIFACTS/ui, or to tmp_path/screenshots.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline

CHROMIUM = Path("/usr/bin/chromium")
KEYS = {
    "SLUICE_HMAC_KEY": "browser-hmac-key",
    "SLUICE_MASK_SALT": "browser-salt",
    "SLUICE_ENCRYPTION_KEY": "6e" * 32,
}
EVENTS = (
    "event_id,event_type,email,amount\n"
    "e1,view,alice@example.com,10\n"
    "e2,buy,bob@example.org,20\n"
    "e3,refund,carol@example.net,30\n"
    "e4,refund,dave@example.com,40\n"
)


def spec(allowed: list[str]) -> dict:
    return {
        "version": 1,
        "pipeline": "orders",
        "owner": "sales-data",
        "sources": {
            "events": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "contract": {
                    "columns": {
                        "event_id": {"type": "string", "nullable": False},
                        "event_type": {"type": "string", "values": allowed},
                        "email": {"type": "string", "description": "Buyer address"},
                        "amount": {"type": "double", "min": 0},
                    }
                },
            }
        },
        "pii": {"email": "hmac"},
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
    }


def first_run(root: Path) -> RunResult:
    (root / "data").mkdir()
    (root / "data" / "events.csv").write_text(EVENTS)
    (root / "orders.yaml").write_text(yaml.safe_dump(spec(["view", "buy"])))
    (root / "sluice.yaml").write_text("version: 1\nproject: shop\npipelines: [orders.yaml]\n")
    options = RunOptions(
        logical_date=date(2025, 1, 15), base_dir=root, state_dir=root / ".sluice", environ=KEYS
    )
    return run_pipeline(load_spec(root / "orders.yaml"), options)


@pytest.fixture()
def dashboard(tmp_path: Path) -> Iterator[tuple[str, Path, RunResult]]:
    run = first_run(tmp_path)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    environ.update(KEYS, PYTHONUNBUFFERED="1", COLUMNS="300")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "sluice"), "ui", "--port", "0"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, f"sluice ui did not print its address: {line!r}"
        yield found.group(0), tmp_path, run
    finally:
        process.terminate()
        process.wait(timeout=30)


def screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SLUICE_TEST_ARTIFACTS") or tmp_path) / (
        "ui" if os.environ.get("SLUICE_TEST_ARTIFACTS") else "screenshots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    print(f"screenshots in {folder}")
    return folder


def test_a_runs_rejected_rows_can_be_replayed_from_the_browser_after_the_spec_is_fixed(
    dashboard: tuple[str, Path, RunResult], tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            "no Chromium at /usr/bin/chromium: install it with `apt-get install -y chromium` "
            "(scripts/test.sh does this) and run the test again"
        )
    from playwright.sync_api import sync_playwright

    url, root, run = dashboard
    shots = screenshots(tmp_path)
    assert run.dead_letter_rows == 2
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(url)
        page.screenshot(path=shots / "1-pipelines.png", full_page=True)
        page.click("text=orders")
        page.wait_for_selector("h1:has-text('Pipeline orders')")
        page.screenshot(path=shots / "2-pipeline.png", full_page=True)
        page.click(f"a:has-text('{run.run_id}')")
        page.wait_for_selector("svg.waterfall")
        page.screenshot(path=shots / "3-run.png", full_page=True)
        page.click("text=Show dead-letter rows")
        before = page.inner_text("#dlq-count")
        page.screenshot(path=shots / "4-dead-letters.png", full_page=True)

        (root / "orders.yaml").write_text(yaml.safe_dump(spec(["view", "buy", "refund"])))
        page.click(f"button:has-text('Replay run {run.run_id}')")
        outcome = page.inner_text("#replay-outcome")
        page.screenshot(path=shots / "5-replayed.png", full_page=True)
        page.click("text=Remaining dead letters of this run")
        after = page.inner_text("#dlq-count")
        page.screenshot(path=shots / "6-dead-letters-after.png", full_page=True)
        browser.close()

    assert before.startswith("2 dead-letter row(s)")
    assert outcome.startswith("Replayed 2 dead letter(s): 2 passed")
    assert after.startswith("0 dead-letter row(s)")
    table = DeltaTable(str(root / "lake" / "orders")).to_pyarrow_table()
    assert sorted(table["event_id"].to_pylist()) == ["e1", "e2", "e3", "e4"]
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "1-pipelines.png",
        "2-pipeline.png",
        "3-run.png",
        "4-dead-letters.png",
        "5-replayed.png",
        "6-dead-letters-after.png",
    ]
