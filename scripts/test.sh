#!/usr/bin/env bash
# Install sluiceway with its test tools into .venv, start the services the integration
# tests need (an S3-compatible server, Redis, NATS JetStream, a Kafka-protocol mock cluster,
# PostgreSQL, MariaDB, Debian's Chromium for the dashboard), lint, and run the whole test suite.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v 'is ignored' || true
bash scripts/services/moto.sh start
bash scripts/services/redis.sh start
bash scripts/services/nats.sh start
bash scripts/services/kafka.sh start
bash scripts/services/postgres.sh start
bash scripts/services/mariadb.sh start
bash scripts/services/chromium.sh
export SLUICE_TEST_S3_ENDPOINT="http://127.0.0.1:${MOTO_PORT:-5000}"
.venv/bin/ruff check src tests bench
.venv/bin/mypy src
.venv/bin/pytest "$@"
