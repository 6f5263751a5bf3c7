#!/usr/bin/env bash
# An S3-compatible server for the integration tests: moto in server mode on
# 127.0.0.1:${MOTO_PORT:-5000}. Installs moto[server] into its own venv (PyPI) on first use;
# idempotent (safe to call when already running). State is in memory (lost on stop); any
# access key id / secret is accepted.
# Data, logs and the pid file live in ${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}/moto.
# Usage: bash scripts/services/moto.sh [start|stop|status]   (default: start)
set -euo pipefail
ACTION=${1:-start}; PORT=${MOTO_PORT:-5000}
DIR=${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}/moto; VENV=$DIR/venv; PIDF=$DIR/moto.pid
mkdir -p "$DIR"
up() { curl -sf "http://127.0.0.1:$PORT/moto-api/" >/dev/null 2>&1; }
case "$ACTION" in
  start)  ;;
  stop)   if [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; then
            kill "$(cat "$PIDF")"; for i in $(seq 1 50); do kill -0 "$(cat "$PIDF")" 2>/dev/null || break; sleep 0.1; done
          fi; rm -f "$PIDF"; exit 0 ;;
  status) if up; then echo "moto up on $PORT"; else echo "moto down"; fi; exit 0 ;;
  *)      echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/moto_server" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'moto[server]' 2>&1 | grep -v 'is ignored' || true
fi
if ! up; then
  setsid nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" </dev/null >"$DIR/moto.log" 2>&1 &
  echo $! > "$PIDF"
  for i in $(seq 1 100); do up && break; sleep 0.1; done
fi
if up; then
  echo "moto_server $("$VENV/bin/python" -c 'import moto;print(moto.__version__)') up on http://127.0.0.1:$PORT (pid $(cat "$PIDF" 2>/dev/null || echo '?')); any key id/secret works"
else
  echo "moto_server did not answer on http://127.0.0.1:$PORT; see $DIR/moto.log" >&2; exit 1
fi
