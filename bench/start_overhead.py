"""Benchmark: the wall time `sluice run` adds to a trivial pipeline, beyond the work itself.

The work: 100 CSV rows → a Delta table. In the same run, alternating, each measured as a
fresh process (interpreter start included, as a scheduler would start it):
- plain: a Python script that reads the CSV with pyarrow and writes it with deltalake;
- sluice: `sluice run` of a spec doing the same (contract, checks, run store, results file);
- help: `sluice --help` (the command's import cost alone).
Prints the median and p90 of each and the overhead (sluice − plain); goal: < 1 s.

    .venv/bin/python bench/start_overhead.py --repeat 15
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_S = 1.0
ROWS = 100
SPEC = """version: 1
pipeline: trivial
sources:
  orders:
    type: files
    path: data/orders.csv
    format: csv
    contract:
      columns:
        order_id: {type: bigint, nullable: false}
        amount: {type: double, min: 0}
        country: {type: string}
checks:
  - not_null: {column: order_id}
sinks:
  - type: delta
    path: lake/orders
    mode: overwrite_partition
    replace_where: "true"
"""
PLAIN = """import sys
import pyarrow.csv as csv
from deltalake import write_deltalake
table = csv.read_csv(sys.argv[1])
write_deltalake(sys.argv[2], table, mode="overwrite")
"""


def write_inputs(folder: Path) -> None:
    (folder / "data").mkdir(parents=True)
    lines = ["order_id,amount,country"]
    lines += [f"{i},{i * 1.25:.2f},{('FR', 'DE', 'US')[i % 3]}" for i in range(ROWS)]
    (folder / "data/orders.csv").write_text("\n".join(lines) + "\n")
    (folder / "pipeline.yaml").write_text(SPEC)
    (folder / "plain.py").write_text(PLAIN)


def timed(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started


def commands(folder: Path) -> dict[str, list[str]]:
    sluice = str(Path(sys.executable).with_name("sluice"))
    return {
        "plain": [sys.executable, "plain.py", "data/orders.csv", str(folder / "plain_lake")],
        "sluice": [sluice, "run", "pipeline.yaml", "--state-dir", str(folder / ".sluice")],
        "help": [sluice, "--help"],
    }


def measure(repeat: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"plain": [], "sluice": [], "help": []}
    with tempfile.TemporaryDirectory(prefix="sluice-start-") as tmp:
        folder = Path(tmp)
        write_inputs(folder)
        runs = commands(folder)
        for name in runs:  # warm the page cache and .pyc files once
            timed(runs[name], folder)
        for _ in range(repeat):
            for name, command in runs.items():
                times[name].append(timed(command, folder))
            shutil.rmtree(folder / "plain_lake", ignore_errors=True)
    return times


def report(times: dict[str, list[float]]) -> None:
    def p90(values: list[float]) -> float:
        return sorted(values)[max(0, round(0.9 * len(values)) - 1)]

    print(f"{'':8} {'median s':>9} {'p90 s':>7}  (fresh process each, {len(times['plain'])} runs)")
    for name, values in times.items():
        print(f"{name:8} {statistics.median(values):9.3f} {p90(values):7.3f}")
    overhead = statistics.median(times["sluice"]) - statistics.median(times["plain"])
    verdict = "met" if overhead < GOAL_S else "MISSED"
    print(
        f"overhead of sluice run over plain Python: {overhead:.3f} s (goal < {GOAL_S} s: {verdict})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    report(measure(parser.parse_args().repeat))


if __name__ == "__main__":
    main()
