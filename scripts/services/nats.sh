#!/usr/bin/env bash
# NATS server with JetStream for the integration tests, on 127.0.0.1:${NATS_PORT:-4222}.
# Idempotent: when something already accepts connections on the port (for example a
# nats-server started by the image without a monitoring port) it is used as is. Health is a
# TCP connect that reads the server's INFO line, so no monitoring port is needed.
# Installs the Debian package nats-server when missing. Data, log and pid file of a server
# this script starts live in ${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}/nats;
# `stop` only stops a server this script started.
# Usage: bash scripts/services/nats.sh [start|stop|status]   (default: start)
set -euo pipefail
ACTION=${1:-start}; PORT=${NATS_PORT:-4222}
DIR=${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}/nats; PIDF=$DIR/nats.pid
up() {
  # A NATS server greets every client with "INFO {...}"; JetStream must be on in it.
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT && head -n 1 <&3" \
    2>/dev/null | grep -q '"jetstream":true'
}
listening() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null; }
case "$ACTION" in
  start)  ;;
  stop)   if [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; then
            kill "$(cat "$PIDF")"; for i in $(seq 1 50); do kill -0 "$(cat "$PIDF")" 2>/dev/null || break; sleep 0.1; done
          fi; rm -f "$PIDF"; exit 0 ;;
  status) if up; then echo "nats (JetStream) up on 127.0.0.1:$PORT"; else echo "nats down"; fi; exit 0 ;;
  *)      echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
if up; then
  echo "nats-server with JetStream already up on 127.0.0.1:$PORT"; exit 0
fi
if listening; then
  echo "something listens on 127.0.0.1:$PORT but it is not a NATS server with JetStream" \
       "(restart it with -js, or set NATS_PORT)" >&2; exit 1
fi
mkdir -p "$DIR/js"
BIN=$(command -v nats-server || true)
[ -z "$BIN" ] && [ -x /usr/sbin/nats-server ] && BIN=/usr/sbin/nats-server
if [ -z "$BIN" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nats-server >/dev/null
  BIN=$(command -v nats-server || echo /usr/sbin/nats-server)
fi
# -js enables JetStream, -sd is its storage; nats-server has no daemon flag, hence setsid nohup.
setsid nohup "$BIN" -a 127.0.0.1 -p "$PORT" -js -sd "$DIR/js" -P "$PIDF" -l "$DIR/nats.log" \
  </dev/null >/dev/null 2>&1 &
for i in $(seq 1 50); do up && break; sleep 0.1; done
if up; then
  echo "nats-server $("$BIN" --version | awk '{print $2}') with JetStream up on 127.0.0.1:$PORT (pid $(cat "$PIDF" 2>/dev/null || echo '?'))"
else
  echo "nats-server did not answer on 127.0.0.1:$PORT; see $DIR/nats.log" >&2; exit 1
fi
