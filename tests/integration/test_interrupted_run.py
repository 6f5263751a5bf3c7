"""Ctrl-C (SIGINT) or SIGTERM on a batch run: before the commit the run fails as
interrupted, the table is untouched and `sluice run` exits 130 (143 for SIGTERM); after the
commit the run stays succeeded."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
import yaml
from deltalake import DeltaTable

from sluiceway.core.events import Event
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.runstore import RunStore

ROWS = "id,amount\n1,2.5\n2,0.5\n3,4.0\n"
SLOW_STEP = """
import time
from pathlib import Path

def transform(batch):
    Path({marker!r}).write_text("started")
    time.sleep(60)
    return batch
"""


def write_pipeline(tmp_path: Path, steps: list[dict[str, Any]]) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data/orders.csv").write_text(ROWS)
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": "data/*.csv", "format": "csv"}},
        "steps": steps,
        "sinks": [{"type": "delta", "path": "lake/orders"}],
    }
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_until(folder: Path, spec: Path, marker: Path) -> subprocess.Popen[str]:
    """`sluice run` of `spec` in a process of its own, once its step has written `marker`."""
    env = {**os.environ, "PYTHONPATH": str(folder), "SLUICE_HOME": str(folder / ".sluice")}
    sluice = Path(sys.executable).parent / "sluice"
    process = subprocess.Popen(
        [str(sluice), "run", str(spec), "--date", "2025-01-15"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the step never ran"
        time.sleep(0.05)
    return process


@pytest.mark.parametrize(("stop", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_before_the_commit_fails_the_run_as_interrupted(
    tmp_path: Path, stop: signal.Signals, code: int
) -> None:
    """SIGTERM is what a scheduler (Airflow) sends to stop a task: it is Ctrl-C's twin."""
    marker = tmp_path / "step-started"
    (tmp_path / "sw_slow_step.py").write_text(SLOW_STEP.format(marker=str(marker)))
    spec = write_pipeline(tmp_path, [{"python": {"function": "sw_slow_step:transform"}}])
    process = run_until(tmp_path, spec, marker)

    process.send_signal(stop)
    out, err = process.communicate(timeout=60)

    assert process.returncode == code, (out, err)
    assert "interrupted (Ctrl-C / SIGINT / SIGTERM) before the commit" in out + err
    assert "please report it" not in out + err
    assert not DeltaTable.is_deltatable(str(tmp_path / "lake/orders"))
    [record] = RunStore(tmp_path / ".sluice" / "runs.db").list(pipeline="orders")
    assert record.status == "failed"


def test_ctrl_c_after_the_commit_leaves_the_run_succeeded(tmp_path: Path) -> None:
    spec = write_pipeline(tmp_path, [{"sql": "SELECT * FROM input"}])

    def ctrl_c_once_committed(event: Event) -> None:
        if event.name == "commit_done":
            raise KeyboardInterrupt

    result = run_pipeline(
        load_spec(spec),
        RunOptions(
            logical_date=date(2025, 1, 15),
            base_dir=tmp_path,
            state_dir=tmp_path / ".sluice",
            subscribers=[ctrl_c_once_committed],
        ),
    )

    assert result.ok and result.interrupted
    assert "interrupted" in (result.note or "") and "the commit stands" in (result.note or "")
    assert DeltaTable(str(tmp_path / "lake/orders")).to_pyarrow_table().num_rows == 3
    [record] = RunStore(tmp_path / ".sluice" / "runs.db").list(pipeline="orders")
    assert record.status == "succeeded"


FLAKY_STEP = """
from pathlib import Path
from sluiceway.errors import TransientError

def transform(batch):
    Path({marker!r}).write_text("failed once")
    raise TransientError("the service is down")
"""


def test_sigterm_while_waiting_to_retry_exits_143_with_a_message(tmp_path: Path) -> None:
    marker = tmp_path / "attempted"
    (tmp_path / "sw_flaky_step.py").write_text(FLAKY_STEP.format(marker=str(marker)))
    spec = write_pipeline(tmp_path, [{"python": {"function": "sw_flaky_step:transform"}}])
    data = yaml.safe_load(spec.read_text())
    data["retries"] = {"max_attempts": 3, "backoff": "30s"}
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    process = run_until(tmp_path, spec, marker)
    time.sleep(1.0)  # the failed attempt is recorded, the backoff has begun

    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)

    assert process.returncode == 143, (out, err)
    assert "interrupted while waiting to retry" in err
    assert "Aborted" not in out + err
