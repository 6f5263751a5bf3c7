#!/usr/bin/env bash
# Redis (Debian redis-server, 7.x) for the integration tests on 127.0.0.1:${REDIS_PORT:-6379},
# no persistence, daemonized. Idempotent: when something already answers PING on the port it
# is left alone and the script succeeds. Installs redis-server with apt-get only when it has
# to start one and the binary is missing (run `apt-get update` first on a fresh machine).
# Data, log and pid file live in ${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}/redis[-PORT].
# Usage: bash scripts/services/redis.sh [start|stop|status]   (default: start)
set -euo pipefail
ACTION=${1:-start}; PORT=${REDIS_PORT:-6379}
BASE=${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}
DIR=$BASE/redis; [ "$PORT" = 6379 ] || DIR=$BASE/redis-$PORT
PIDF=$DIR/redis.pid

ping() {
  if command -v redis-cli >/dev/null; then
    redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null
  else
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT && printf 'PING\r\n' >&3 && head -c 7 <&3" 2>/dev/null
  fi
}
up() { ping | grep -q PONG; }

case "$ACTION" in
  start)  ;;
  stop)   if up; then redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; fi
          for i in $(seq 1 50); do up || break; sleep 0.1; done
          if up; then echo "redis on $PORT did not stop" >&2; exit 1; fi
          rm -f "$PIDF"; exit 0 ;;
  status) if up; then echo "redis up on 127.0.0.1:$PORT"; else echo "redis down on 127.0.0.1:$PORT"; fi; exit 0 ;;
  *)      echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

if ! up; then
  if ! command -v redis-server >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
  fi
  mkdir -p "$DIR"
  redis-server --bind 127.0.0.1 --port "$PORT" --daemonize yes --pidfile "$PIDF" \
    --dir "$DIR" --logfile "$DIR/redis.log" --save '' --appendonly no \
    --protected-mode no --maxmemory 0
  for i in $(seq 1 50); do up && break; sleep 0.1; done
fi
if up; then
  version=$(redis-cli -h 127.0.0.1 -p "$PORT" info server 2>/dev/null | tr -d '\r' \
    | sed -n 's/^redis_version://p' || true)
  echo "redis ${version:-?} up on 127.0.0.1:$PORT"
else
  echo "redis did not answer on 127.0.0.1:$PORT; see $DIR/redis.log" >&2; exit 1
fi
