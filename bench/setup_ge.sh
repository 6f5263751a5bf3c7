#!/usr/bin/env bash
# Create (or update) a separate virtualenv with Great Expectations 1.x, pandas and pyarrow for
# bench/quality_checks.py --ge-python. Kept apart from the project's .venv so that GE's
# dependency pins cannot change what sluiceway runs with.
#
#   bash bench/setup_ge.sh                 # venv in /tmp/sluice-bench-ge
#   bash bench/setup_ge.sh /path/to/venv   # elsewhere
#   PYTHON=python3.11 bash bench/setup_ge.sh
#
# Idempotent: an existing venv is reused, and pip only installs what is missing or outside the
# version ranges below. Prints the interpreter to pass as --ge-python.
set -euo pipefail

venv="${1:-/tmp/sluice-bench-ge}"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "setup_ge.sh: no '$python' on PATH; set PYTHON to a Python 3.10+ interpreter." >&2
    exit 1
fi

if [ ! -x "$venv/bin/python" ]; then
    echo "Creating $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
fi

"$venv/bin/python" -m pip install --quiet \
    "great_expectations>=1.0,<2" \
    "pandas>=2,<3" \
    "pyarrow>=14"

"$venv/bin/python" - <<'PY'
import great_expectations as gx
import pandas
import pyarrow

major = int(gx.__version__.split(".")[0])
if major != 1:
    raise SystemExit(f"setup_ge.sh: expected great_expectations 1.x, got {gx.__version__}")
print(f"great_expectations {gx.__version__}, pandas {pandas.__version__}, pyarrow {pyarrow.__version__}")
PY
echo "Use: --ge-python $venv/bin/python"
