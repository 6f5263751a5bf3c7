"""`sluice demo`: generate a clickstream sample with defects and run the example pipeline."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path

from sluiceway.core.events import Subscriber
from sluiceway.core.loader import load_spec
from sluiceway.core.runner import RunOptions, RunResult, run_pipeline
from sluiceway.demo.clickstream import GeneratedSample, generate_clickstream, write_manifest
from sluiceway.errors import ConfigError

EXAMPLE = "clickstream_batch"
DEMO_KEYS = ("SLUICE_HMAC_KEY", "SLUICE_MASK_SALT", "SLUICE_ENCRYPTION_KEY")


def example_dir() -> Path:
    """The example's folder in this checkout (examples/clickstream_batch)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        candidate = parent / "examples" / EXAMPLE
        if (candidate / "pipeline.yaml").is_file():
            return candidate
    raise ConfigError(
        f"cannot find examples/{EXAMPLE}/pipeline.yaml above {here}; "
        "install sluiceway from a checkout (pip install -e .) to run the demo"
    )


def prepare(workdir: Path, *, rows: int) -> tuple[Path, GeneratedSample]:
    """Copy the example spec into `workdir` and generate its data there."""
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("lake", "data"):
        shutil.rmtree(workdir / stale, ignore_errors=True)
    spec = workdir / "pipeline.yaml"
    shutil.copyfile(example_dir() / "pipeline.yaml", spec)
    sample = generate_clickstream(workdir / "data", rows=rows, files=4)
    write_manifest(sample, workdir / "data" / "manifest.json")
    return spec, sample


def demo_keys() -> dict[str, str]:
    """Keys for the demo's masking: from the environment, else generated for this run only."""
    return {name: os.environ.get(name) or secrets.token_hex(32) for name in DEMO_KEYS}


def run_demo(
    workdir: Path, *, rows: int, subscribers: list[Subscriber]
) -> tuple[RunResult, GeneratedSample]:
    """Generate the sample in `workdir`, run the example pipeline on it."""
    spec, sample = prepare(workdir, rows=rows)
    pipeline = load_spec(spec)
    environ = {**os.environ, **demo_keys()}
    options = RunOptions(
        logical_date=sample_day(),
        base_dir=workdir,
        state_dir=workdir / ".sluice",
        environ=environ,
        subscribers=subscribers,
    )
    return run_pipeline(pipeline, options), sample


def sample_day():
    """The day the generated sample covers."""
    from datetime import date

    return date(2025, 1, 15)
