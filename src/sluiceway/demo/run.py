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


def demo_keys(workdir: Path) -> tuple[dict[str, str], Path | None]:
    """Keys for the demo's masking: from the environment, else those a previous demo saved
    in `<workdir>/.sluice/demo-keys.env`, else new ones saved there (mode 600), so that
    `sluice run` and `sluice replay` in the demo folder can use them. The file, when used."""
    path = workdir / ".sluice" / KEYS_FILE
    from_env = {name: os.environ[name] for name in DEMO_KEYS if os.environ.get(name)}
    if len(from_env) == len(DEMO_KEYS):
        return from_env, None
    # Only keys made here go to the file: a key set in the environment is never written.
    saved = _read_env_file(path)
    made = {
        name: saved.get(name) or secrets.token_hex(32) for name in DEMO_KEYS if name not in from_env
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write("".join(f"{name}={value}\n" for name, value in made.items()))
    return {**made, **from_env}, path


KEYS_FILE = "demo-keys.env"


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    pairs = (line.partition("=") for line in path.read_text(encoding="utf-8").splitlines())
    return {name.strip(): value.strip() for name, sep, value in pairs if sep}


def run_demo(
    workdir: Path, *, rows: int, subscribers: list[Subscriber]
) -> tuple[RunResult, GeneratedSample, Path | None]:
    """Generate the sample in `workdir`, run the example pipeline on it; the keys file the
    demo used (None when every key came from the environment)."""
    spec, sample = prepare(workdir, rows=rows)
    pipeline = load_spec(spec)
    keys, keys_file = demo_keys(workdir)
    options = RunOptions(
        logical_date=sample_day(),
        base_dir=workdir,
        state_dir=workdir / ".sluice",
        environ={**os.environ, **keys},
        subscribers=subscribers,
    )
    return run_pipeline(pipeline, options), sample, keys_file


def sample_day():
    """The day the generated sample covers."""
    from datetime import date

    return date(2025, 1, 15)
