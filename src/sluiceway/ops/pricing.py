"""The price table `sluice cost` and `sluice doc` compute money with.

Defaults are public list prices of a typical cloud region (object storage per tier, block
storage for local disks, a 2-vCPU machine-hour, egress). A project overrides any of them in a
YAML or JSON file (`--prices FILE`) and a pipeline in its spec (`cost.prices`); the spec wins.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import yaml

from sluiceway.core.spec import Pipeline
from sluiceway.errors import ConfigError

DEFAULT_PRICES: dict[str, float] = {
    "storage_local_gb_month": 0.08,
    "storage_hot_gb_month": 0.023,
    "storage_warm_gb_month": 0.0125,
    "storage_cold_gb_month": 0.004,
    "storage_archive_gb_month": 0.00099,
    "compute_hour": 0.10,
    "rows_per_compute_hour": 500_000_000.0,
    "transfer_gb": 0.09,
    "requests_per_1000": 0.005,
}


def load_prices(
    pipeline: Pipeline | None = None, path: str | Path | None = None
) -> dict[str, float]:
    """The defaults, then the file at `path`, then the spec's `cost.prices`.

    Raises:
        ConfigError: the file cannot be read, or names a price that does not exist, or a
            price is not a non-negative number.
    """
    prices = dict(DEFAULT_PRICES)
    if path is not None:
        prices.update(_read_prices(Path(path)))
    if pipeline is not None and pipeline.cost is not None:
        prices.update(_validated(pipeline.cost.prices, f"cost.prices of '{pipeline.pipeline}'"))
    return prices


def storage_price(prices: Mapping[str, float], tier: str, *, is_remote: bool) -> float:
    """Price per GB-month of a tier: `storage_<tier>_gb_month`, else local or hot storage."""
    key = f"storage_{tier}_gb_month"
    if key in prices:
        return prices[key]
    return prices["storage_hot_gb_month" if is_remote else "storage_local_gb_month"]


def _read_prices(path: Path) -> dict[str, float]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"Could not read the price table {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"The price table {path} must be a mapping of price name → number.")
    return _validated(data, str(path))


def _validated(data: Mapping[str, object], where: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in data.items():
        is_tier_price = key.startswith("storage_") and key.endswith("_gb_month")
        if key not in DEFAULT_PRICES and not is_tier_price:
            raise ConfigError(
                f"{where}: unknown price '{key}'; known: {', '.join(sorted(DEFAULT_PRICES))} "
                "(or storage_<tier>_gb_month for a tier of your own)"
            )
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: price '{key}' must be a number ≥ 0, not {value!r}")
        out[key] = float(value)
    return out
