"""`sluice optimize / vacuum / history / restore` on the Delta tables of real pipeline runs."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import pyarrow as pa
import pytest
import yaml
from click.testing import CliRunner, Result
from deltalake import CommitProperties, DeltaTable, write_deltalake

from sluiceway.cli_storage import COMMANDS, optimize_table, resolve_target
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, run_pipeline
from sluiceway.core.storage import delta_storage_options
from sluiceway.sinks.delta import DeltaSinkConfig

FIRST_DAY = date(2025, 3, 1)
RUNS = 5
COMMAND = {command.name: command for command in COMMANDS}


def lake_spec() -> dict[str, Any]:
    return {
        "version": 1,
        "pipeline": "orders_lake",
        "sources": {
            "orders": {
                "type": "files",
                "path": "data/",
                "format": "csv",
                "incremental": True,
                "contract": {
                    "columns": {
                        "order_id": {"type": "string", "nullable": False},
                        "amount": {"type": "double", "min": 0},
                    }
                },
            }
        },
        "sinks": [{"type": "delta", "path": "lake/orders", "mode": "append"}],
        "dead_letter": {"path": "lake/dead_letter"},
    }


@dataclass(frozen=True)
class Lake:
    """A folder holding a spec whose pipeline ran RUNS times, one new file per run."""

    folder: Path
    spec: Path
    run_ids: list[str]

    @property
    def table(self) -> DeltaTable:
        return DeltaTable(str(self.folder / "lake" / "orders"))

    @property
    def dead_letters(self) -> DeltaTable:
        return DeltaTable(str(self.folder / "lake" / "dead_letter"))

    def invoke(self, command: str, *args: str) -> Result:
        return invoke(COMMAND[command], str(self.spec), *args)


def invoke(command: click.Command, *args: str) -> Result:
    return CliRunner().invoke(command, list(args), catch_exceptions=False)


def order_ids(table: DeltaTable) -> list[str]:
    return sorted(table.to_pyarrow_table(columns=["order_id"])["order_id"].to_pylist())


def run_day(folder: Path, spec: Path, day: int) -> str:
    """Add the file of `day` (two good rows, one negative amount) and run the pipeline."""
    csv = folder / "data" / f"orders-{day}.csv"
    csv.parent.mkdir(parents=True, exist_ok=True)
    csv.write_text(f"order_id,amount\no{day}a,{day}.5\no{day}b,{day}\no{day}bad,-{day + 1}\n")
    options = RunOptions(
        logical_date=FIRST_DAY + timedelta(days=day),
        base_dir=folder,
        state_dir=folder / ".sluice",
    )
    result = run_pipeline(load_spec(spec), options)
    assert result.ok, result.error
    return result.run_id


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    folder = tmp_path_factory.mktemp("lake")
    spec = folder / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(lake_spec(), sort_keys=False))
    run_ids = [run_day(folder, spec, day) for day in range(RUNS)]
    return Lake(folder, spec, run_ids)


@pytest.fixture
def lake(built_lake: Lake, tmp_path: Path) -> Lake:
    """A copy of the built lake that the test may change."""
    folder = tmp_path / "copy"
    shutil.copytree(built_lake.folder, folder)
    return Lake(folder, folder / "pipeline.yaml", built_lake.run_ids)


def test_optimize_compacts_five_appends_into_one_file_keeping_every_row(lake: Lake) -> None:
    rows_before = order_ids(lake.table)
    assert len(lake.table.file_uris()) == RUNS

    result = lake.invoke("optimize")

    assert result.exit_code == 0, result.output
    assert f"compacted: {RUNS} file(s) before, 1 after" in result.output
    assert len(lake.table.file_uris()) == 1
    assert order_ids(lake.table) == rows_before
    assert len(rows_before) == 2 * RUNS


def test_optimize_zorders_by_the_given_columns(lake: Lake) -> None:
    result = lake.invoke("optimize", "--zorder", "amount", "--zorder", "order_id")

    assert result.exit_code == 0, result.output
    assert "Z-ordered by amount, order_id" in result.output
    last = lake.table.history(1)[0]
    assert last["operation"] == "OPTIMIZE"
    assert last["operationMetrics"]["plannerStrategy"] == "zOrder"
    assert json.loads(last["sluice.zorder_by"]) == ["amount", "order_id"]
    assert len(lake.table.file_uris()) == 1


def test_optimize_zorders_by_a_sinks_declared_zorder_by(lake: Lake) -> None:
    sink = DeltaSinkConfig(path="lake/orders", zorder_by=["amount"])
    pipeline = load_spec(lake.spec).model_copy(update={"sinks": [sink]})
    target = resolve_target(pipeline, lake.folder)

    outcome = optimize_table(target, zorder_by=target.zorder_by)

    assert target.zorder_by == ("amount",)
    assert (outcome.files_before, outcome.files_after) == (RUNS, 1)
    assert json.loads(lake.table.history(1)[0]["sluice.zorder_by"]) == ["amount"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--zorder", "amout"), "--zorder amout: not a column of sinks[0]"),
        (
            ("--dead-letter", "--zorder", "pipeline"),
            "--zorder pipeline: partition column(s) of the dead-letter table",
        ),
    ],
)
def test_optimize_refuses_a_bad_zorder_column_without_a_traceback(
    lake: Lake, args: tuple[str, ...], message: str
) -> None:
    result = lake.invoke("optimize", *args)

    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(lake.table.file_uris()) == RUNS
    assert len(lake.dead_letters.file_uris()) == RUNS


def test_vacuum_dry_run_lists_compacted_files_and_deletes_none(lake: Lake) -> None:
    old_files = sorted(Path(uri).name for uri in lake.table.file_uris())
    assert lake.invoke("optimize").exit_code == 0

    dry = lake.invoke("vacuum", "--retention-hours", "0", "--force", "--dry-run")

    assert dry.exit_code == 0, dry.output
    assert f"{RUNS} file(s) would be deleted (dry run)" in dry.output
    assert all(name in dry.output for name in old_files)
    assert all((lake.folder / "lake" / "orders" / name).exists() for name in old_files)

    real = lake.invoke("vacuum", "--retention-hours", "0", "--force")

    assert real.exit_code == 0, real.output
    assert f"{RUNS} file(s) deleted" in real.output
    assert not any((lake.folder / "lake" / "orders" / name).exists() for name in old_files)
    assert len(order_ids(lake.table)) == 2 * RUNS


def test_vacuum_refuses_a_retention_below_the_tables_default_of_168_hours(lake: Lake) -> None:
    assert lake.invoke("optimize").exit_code == 0

    result = lake.invoke("vacuum", "--retention-hours", "24", "--dry-run")

    assert result.exit_code == 1
    assert "--retention-hours 24 is below the retention of sinks[0] (168 h" in result.output
    assert "--force" in result.output
    assert "Traceback" not in result.output


def test_vacuum_respects_the_retention_the_table_declares(lake: Lake) -> None:
    lake.table.alter.set_table_properties(
        {"delta.deletedFileRetentionDuration": "interval 2 hours"}
    )

    refused = lake.invoke("vacuum", "--retention-hours", "1", "--dry-run")
    allowed = lake.invoke("vacuum", "--retention-hours", "2", "--dry-run")

    assert refused.exit_code == 1
    assert "(2 h, delta.deletedFileRetentionDuration" in refused.output
    assert allowed.exit_code == 0, allowed.output
    assert "0 file(s) would be deleted" in allowed.output


def test_history_shows_each_runs_id_logical_date_and_rows(lake: Lake) -> None:
    result = lake.invoke("history", "--format", "json")

    assert result.exit_code == 0, result.output
    commits = json.loads(result.output)
    assert [c["version"] for c in commits] == list(range(RUNS - 1, -1, -1))
    assert [c["run_id"] for c in commits] == list(reversed(lake.run_ids))
    assert [c["logical_date"] for c in commits] == [
        str(FIRST_DAY + timedelta(days=day)) for day in reversed(range(RUNS))
    ]
    assert {c["rows"] for c in commits} == {2}
    assert {c["operation"] for c in commits} == {"WRITE"}


def test_history_as_a_table_respects_the_limit(lake: Lake) -> None:
    result = lake.invoke("history", "--limit", "2")

    assert result.exit_code == 0, result.output
    assert lake.run_ids[-1] in result.output
    assert lake.run_ids[-2] in result.output
    assert lake.run_ids[0] not in result.output


def test_restore_brings_back_an_older_versions_rows(lake: Lake) -> None:
    result = lake.invoke("restore", "--version", "1")

    assert result.exit_code == 0, result.output
    assert f"restored to version 1: new version {RUNS}" in result.output
    assert lake.table.version() == RUNS
    assert order_ids(lake.table) == ["o0a", "o0b", "o1a", "o1b"]
    assert lake.table.history(1)[0]["operation"] == "RESTORE"


def test_restore_by_timestamp_picks_the_version_current_then(lake: Lake) -> None:
    commits = {c["version"]: c["timestamp"] for c in lake.table.history()}
    moment = datetime.fromtimestamp(commits[2] / 1000, UTC).isoformat()

    result = lake.invoke("restore", "--timestamp", moment)

    assert result.exit_code == 0, result.output
    assert order_ids(lake.table) == ["o0a", "o0b", "o1a", "o1b", "o2a", "o2b"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "pass exactly one of --version V or --timestamp ISO"),
        (("--version", "1", "--timestamp", "2025-01-01"), "pass exactly one of"),
        (("--version", "4"), "--version 4: sinks[0] has versions 0 to 4 and 4 is current"),
        (("--timestamp", "yesterday"), "timestamp 'yesterday' is not an ISO 8601 time"),
    ],
)
def test_restore_refuses_bad_targets_with_a_clear_message(
    lake: Lake, args: tuple[str, ...], message: str
) -> None:
    result = lake.invoke("restore", *args)

    assert result.exit_code == 1
    assert message in result.output
    assert lake.table.version() == RUNS - 1


def test_every_command_works_on_the_dead_letter_table(lake: Lake) -> None:
    history = lake.invoke("history", "--dead-letter", "--format", "json")
    optimized = lake.invoke("optimize", "--dead-letter")
    restored = lake.invoke("restore", "--dead-letter", "--version", "0")
    vacuumed = lake.invoke("vacuum", "--dead-letter", "--dry-run")

    assert history.exit_code == 0, history.output
    assert [c["run_id"] for c in json.loads(history.output)] == list(reversed(lake.run_ids))
    assert optimized.exit_code == 0, optimized.output
    assert f"the dead-letter table compacted: {RUNS} file(s) before, 1 after" in optimized.output
    assert restored.exit_code == 0, restored.output
    letters = lake.dead_letters.to_pyarrow_table(columns=["run_id"])["run_id"].to_pylist()
    assert letters == [lake.run_ids[0]]
    assert vacuumed.exit_code == 0, vacuumed.output
    assert len(order_ids(lake.table)) == 2 * RUNS


def test_a_pipeline_that_never_ran_or_a_wrong_sink_is_a_clear_error(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    spec.write_text(yaml.safe_dump(lake_spec(), sort_keys=False))

    missing = invoke(COMMAND["history"], str(spec))
    wrong_sink = invoke(COMMAND["optimize"], str(spec), "--sink", "3")
    both = invoke(COMMAND["vacuum"], str(spec), "--sink", "0", "--dead-letter")

    assert missing.exit_code == 1
    assert f"no Delta table at {tmp_path / 'lake' / 'orders'} yet" in missing.output
    assert wrong_sink.exit_code == 1
    assert "--sink 3: the spec has 1 sink(s), numbered from 0; delta sinks: [0]" in (
        wrong_sink.output
    )
    assert both.exit_code == 1
    assert "--sink and --dead-letter exclude each other" in both.output


def test_a_spec_with_problems_is_reported_with_exit_code_1(tmp_path: Path) -> None:
    spec = tmp_path / "pipeline.yaml"
    broken = lake_spec()
    broken["sinks"][0]["pathh"] = "x"
    spec.write_text(yaml.safe_dump(broken, sort_keys=False))

    result = invoke(COMMAND["history"], str(spec))

    assert result.exit_code == 1
    assert "pathh" in result.output


def test_optimize_and_history_work_on_an_s3_sink(
    tmp_path: Path,
    s3_endpoint: str,
    make_bucket: Callable[[str], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "storage-cmd-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "storage-cmd-secret")
    uri = f"s3://{make_bucket('sluice-storage')}/lake/orders"
    options = delta_storage_options(uri, {"endpoint_url": s3_endpoint})
    for index in range(3):
        write_deltalake(
            uri,
            pa.table({"order_id": [f"o{index}"]}),
            mode="append",
            storage_options=options,
            commit_properties=CommitProperties(custom_metadata={"sluice.run_id": f"r{index}"}),
        )
    spec = lake_spec()
    spec["sinks"] = [
        {"type": "delta", "path": uri, "storage_options": {"endpoint_url": s3_endpoint}}
    ]
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    optimized = invoke(COMMAND["optimize"], str(path))
    history = invoke(COMMAND["history"], str(path), "--format", "json")

    assert optimized.exit_code == 0, optimized.output
    assert "compacted: 3 file(s) before, 1 after" in optimized.output
    commits = json.loads(history.output)
    assert [c["operation"] for c in commits] == ["OPTIMIZE", "WRITE", "WRITE", "WRITE"]
    assert [c["run_id"] for c in commits] == [None, "r2", "r1", "r0"]
    assert "storage-cmd-secret" not in optimized.output + history.output
