#!/usr/bin/env bash
# PostgreSQL (Debian packages, newest installed major) for the integration tests on
# 127.0.0.1:${PGPORT:-5432}: trust auth on loopback (test-only), wal_level=logical and
# wal2json for logical decoding. Idempotent: when a server already answers on the port it is
# kept; wal_level is switched (one restart) only when it is not logical yet and the cluster
# is a Debian one this script can restart. Installs packages with apt-get only when missing
# (run `apt-get update` first on a fresh machine).
# Usage: bash scripts/services/postgres.sh [start|stop|status]   (default: start)
set -euo pipefail
ACTION=${1:-start}; PORT=${PGPORT:-5432}
export DEBIAN_FRONTEND=noninteractive

ready() { pg_isready -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; }
wait_ready() { for _ in $(seq 1 100); do ready && return 0; sleep 0.2; done; return 1; }
psqlc() { psql -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -XAtq -c "$1"; }

install_missing() {
  local need=()
  dpkg -s postgresql >/dev/null 2>&1 || ls /etc/postgresql/*/main >/dev/null 2>&1 \
    || need+=(postgresql postgresql-client)
  if [ ${#need[@]} -gt 0 ]; then apt-get install -y -q "${need[@]}" >/dev/null; fi
  VER=$(ls /etc/postgresql | sort -n | tail -1)
  dpkg -s "postgresql-$VER-wal2json" >/dev/null 2>&1 \
    || apt-get install -y -q "postgresql-$VER-wal2json" >/dev/null \
    || echo "warning: postgresql-$VER-wal2json not installed (only wal2json decoding needs it)" >&2
}

VER=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1 || true)
ctl() { pg_ctlcluster --skip-systemctl-redirect "$VER" main "$@"; }
is_debian_cluster() { [ -n "$VER" ] && pg_lsclusters -h 2>/dev/null | awk -v v="$VER" -v p="$PORT" '$1==v && $2=="main" && $3==p' | grep -q .; }
online() { pg_lsclusters -h 2>/dev/null | awk -v v="$VER" '$1==v && $2=="main" {print $4}' | grep -q online; }

case "$ACTION" in
  start) ;;
  stop)   if [ -n "$VER" ] && online; then ctl stop; fi; exit 0 ;;
  status) if ready; then echo "postgres up on 127.0.0.1:$PORT"; else echo "postgres down on 127.0.0.1:$PORT"; fi; exit 0 ;;
  *)      echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

trust_loopback() {
  local hba=/etc/postgresql/$VER/main/pg_hba.conf
  grep -q '^# pipeline-test trust' "$hba" && return 0
  cp -n "$hba" "$hba.orig"
  { echo '# pipeline-test trust (first matching line wins, so these go on top)'
    for db in all replication; do
      echo "local   $db  all                     trust"
      echo "host    $db  all   127.0.0.1/32      trust"
      echo "host    $db  all   ::1/128           trust"
    done
    cat "$hba"
  } > "$hba.new"
  mv "$hba.new" "$hba"; chown postgres:postgres "$hba"; chmod 640 "$hba"
  if online; then ctl reload; fi
}

if ! ready; then
  install_missing
  trust_loopback
  online || ctl start
  wait_ready || { echo "postgres did not come up on 127.0.0.1:$PORT; see /var/log/postgresql/" >&2; exit 1; }
elif is_debian_cluster; then
  trust_loopback
fi

if ! psqlc 'SELECT 1' >/dev/null 2>&1; then
  echo "postgres answers on 127.0.0.1:$PORT but user postgres cannot log in without a password;" \
       "add trust lines for 127.0.0.1 to its pg_hba.conf" >&2
  exit 1
fi

if [ "$(psqlc 'SHOW wal_level')" != logical ]; then
  psqlc "ALTER SYSTEM SET wal_level = logical" >/dev/null
  psqlc "ALTER SYSTEM SET max_replication_slots = 10" >/dev/null
  psqlc "ALTER SYSTEM SET max_wal_senders = 10" >/dev/null
  if is_debian_cluster; then
    ctl restart
    wait_ready || { echo "postgres did not come back after the restart for wal_level" >&2; exit 1; }
  else
    echo "warning: wal_level=logical is set but takes effect only after this server restarts" >&2
  fi
fi
echo "postgres $(psqlc 'SHOW server_version') up on 127.0.0.1:$PORT" \
     "(user postgres, trust; wal_level=$(psqlc 'SHOW wal_level'))"
