"""The demo's masking keys: the environment's, else kept in the demo folder for later runs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sluiceway.demo.run import DEMO_KEYS, demo_keys


@pytest.fixture()
def no_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEMO_KEYS:
        monkeypatch.delenv(name, raising=False)


def test_keys_made_for_the_demo_are_kept_private_and_reused(tmp_path: Path, no_keys) -> None:
    first, path = demo_keys(tmp_path)
    again, same_path = demo_keys(tmp_path)

    assert path == same_path == tmp_path / ".sluice" / "demo-keys.env"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert again == first and all(len(v) == 64 for v in first.values())
    assert path.read_text().splitlines() == [f"{k}={first[k]}" for k in DEMO_KEYS]


def test_keys_set_in_the_environment_win_and_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in DEMO_KEYS:
        monkeypatch.setenv(name, f"{name.lower()}-value")

    keys, path = demo_keys(tmp_path)

    assert path is None and not (tmp_path / ".sluice").exists()
    assert keys["SLUICE_HMAC_KEY"] == "sluice_hmac_key-value"


def test_a_key_set_in_the_environment_is_never_written_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_keys
) -> None:
    monkeypatch.setenv("SLUICE_ENCRYPTION_KEY", "secret-from-the-environment")

    keys, path = demo_keys(tmp_path)

    assert keys["SLUICE_ENCRYPTION_KEY"] == "secret-from-the-environment"
    assert path is not None and "secret-from-the-environment" not in path.read_text()
    assert sorted(line.split("=")[0] for line in path.read_text().splitlines()) == [
        "SLUICE_HMAC_KEY",
        "SLUICE_MASK_SALT",
    ]
