"""`sluiceway.run` from an orchestrator's task: the spec's retries and timeout, the project's
state folder found from the spec (not the working folder), events to the caller, and the
loader's rules for a model built in Python."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml

import sluiceway
from sluiceway.core.events import Event
from sluiceway.core.runstore import RunStore
from sluiceway.errors import SpecError
from sluiceway.sinks.delta import DeltaSinkConfig
from sluiceway.sources.files import FilesSourceConfig

SLOW_STEP = """
import time

def transform(batch):
    time.sleep(3)
    return batch
"""


def write_project(root: Path, **extra: object) -> Path:
    (root / "pipelines").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "orders.csv").write_text("id,amount\n1,2.5\n2,0.5\n")
    spec = {
        "version": 1,
        "pipeline": "orders",
        "sources": {"orders": {"type": "files", "path": "../data/orders.csv", "format": "csv"}},
        "sinks": [{"type": "delta", "path": "../lake/orders", "mode": "append"}],
        **extra,
    }
    (root / "pipelines" / "orders.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (root / "sluice.yaml").write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "project": "shop",
                "pipelines": ["pipelines/"],
                "state_dir": "state",
                "lineage": {"transport": "none"},
            }
        )
    )
    return root / "pipelines" / "orders.yaml"


def test_a_spec_of_a_project_runs_with_its_state_folder_from_any_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_project(tmp_path / "proj")
    elsewhere = tmp_path / "airflow-worker"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    seen: list[Event] = []

    result = sluiceway.run(spec, logical_date=date(2025, 1, 15), subscribers=[seen.append])

    assert result.ok, result.error
    assert [r.run_id for r in RunStore(tmp_path / "proj" / "state" / "runs.db").list()] == [
        result.run_id
    ]
    assert not (elsewhere / ".sluice").exists()
    assert {"run_started", "commit_done", "run_finished"} <= {e.name for e in seen}


def test_the_specs_timeout_and_retries_hold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = write_project(
        tmp_path / "proj",
        steps=[{"python": {"function": "sw_api_slow:transform"}}],
        timeout="1s",
        retries={"max_attempts": 2, "backoff": "1s"},
    )
    (tmp_path / "sw_api_slow.py").write_text(SLOW_STEP)
    monkeypatch.syspath_prepend(str(tmp_path))

    result = sluiceway.run(spec, logical_date=date(2025, 1, 15))

    assert result.status == "failed"
    assert "timeout" in (result.error or "")
    assert (result.attempt, result.max_attempts) == (2, 2)


def test_a_model_built_in_python_is_held_to_the_rules_of_a_yaml_spec(tmp_path: Path) -> None:
    model = sluiceway.Pipeline(
        version=1,
        pipeline="orders",
        sources={"orders": FilesSourceConfig(type="files", path="data/", incremental=True)},
        sinks=[
            DeltaSinkConfig(
                type="delta", path="lake/orders", mode="overwrite_partition", partition_by=["day"]
            )
        ],
    )

    with pytest.raises(SpecError) as raised:
        sluiceway.run(model, base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    assert "incremental" in str(raised.value)
    assert not (tmp_path / ".sluice").exists()


def test_sluice_run_of_a_projects_spec_from_elsewhere_uses_the_projects_state(
    tmp_path: Path,
) -> None:
    spec = write_project(tmp_path / "proj")
    elsewhere = tmp_path / "cron"
    elsewhere.mkdir()
    sluice = Path(sys.executable).parent / "sluice"
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_HOME", "SLUICE_RUN_STORE")}

    done = subprocess.run(
        [str(sluice), "run", str(spec), "--date", "2025-01-15"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stdout + done.stderr
    assert len(RunStore(tmp_path / "proj" / "state" / "runs.db").list()) == 1
    assert not (elsewhere / ".sluice").exists()
    # backfill of the same spec from the same folder sees that run: nothing to do
    plan = subprocess.run(
        [
            str(sluice),
            "backfill",
            str(spec),
            "--from",
            "2025-01-15",
            "--to",
            "2025-01-15",
            "--dry-run",
        ],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "missing" not in plan.stdout, plan.stdout


def test_the_examples_loaded_as_models_run_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defaults the user never set do not trip the rules between fields."""
    monkeypatch.setenv("SLUICE_HMAC_KEY", "k")
    monkeypatch.setenv("SLUICE_ENCRYPTION_KEY", "ab" * 32)
    example = Path(__file__).parents[2] / "examples" / "clickstream_batch" / "pipeline.yaml"
    model = sluiceway.Pipeline.from_yaml(example)  # type: ignore[attr-defined]

    result = sluiceway.run(model, base_dir=tmp_path, state_dir=tmp_path / ".sluice")

    assert result.status == "failed"  # no data in tmp_path: the run starts and says so
    assert "no file matches" in (result.error or "")


def test_dlq_and_replay_of_a_projects_spec_use_the_projects_state_folder(
    tmp_path: Path,
) -> None:
    contract = {"columns": {"id": {"type": "integer"}, "amount": {"type": "double", "min": 1}}}
    spec = write_project(tmp_path / "proj")
    data = yaml.safe_load(spec.read_text())
    data["sources"]["orders"]["contract"] = contract  # 0.5 breaks min: 1
    spec.write_text(yaml.safe_dump(data, sort_keys=False))
    sluice = Path(sys.executable).parent / "sluice"
    env = {k: v for k, v in os.environ.items() if k not in ("SLUICE_HOME", "SLUICE_RUN_STORE")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(sluice), *args],
            cwd=tmp_path / "proj",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    ran = run("run", str(spec), "--date", "2025-01-15", "--log-format", "json")
    run_id = json.loads(ran.stdout.strip().splitlines()[-1])["run_id"]
    listed = run("dlq", str(spec), "--format", "json")
    replayed = run("replay", str(spec), "--run", run_id)

    assert (tmp_path / "proj" / "state" / "dead_letter").is_dir()
    assert [json.loads(line)["run_id"] for line in listed.stdout.splitlines()] == [run_id]
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "replayed 1 dead letter(s): 0 passed" in replayed.stdout
