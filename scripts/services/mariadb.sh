#!/usr/bin/env bash
# MariaDB (Debian mariadb-server, 10.11) for the integration tests on 127.0.0.1:3306, with the
# binary log in ROW format and full row metadata (what binlog readers such as
# mysql-replication need): log_bin, binlog_format=ROW, binlog_row_image=FULL,
# binlog_row_metadata=FULL, server_id=1.
#
# Idempotent. When a server already answers on the socket, its settings are read with
# SHOW VARIABLES first: if they are right it is left alone; if not, the settings file is
# written and the server restarted (log_bin cannot change while it runs). Creates database
# `test` and user test/test (@127.0.0.1 and @localhost, all privileges); root has no
# password. Installs mariadb-server with apt-get only when it is missing (run
# `apt-get update` first on a fresh machine). Works without systemd: the server is started
# with mysqld_safe and stopped with `mariadb-admin shutdown`.
# Usage: bash scripts/services/mariadb.sh [start|stop|status]   (default: start)
set -euo pipefail
ACTION=${1:-start}
CNF_DIR=/etc/mysql/mariadb.conf.d
CNF=$CNF_DIR/99-sluice-binlog.cnf
MY_CNF=/etc/mysql/my.cnf
LOG=${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}/mariadb/mariadb.log
WANTED="binlog_format=ROW binlog_row_image=FULL binlog_row_metadata=FULL log_bin=ON server_id=1"

admin() { mariadb-admin --protocol=socket -uroot "$@"; }
up() { admin ping >/dev/null 2>&1; }
settings() {
  mariadb --protocol=socket -uroot -N -B -e "SHOW GLOBAL VARIABLES WHERE Variable_name IN
    ('log_bin','binlog_format','binlog_row_image','binlog_row_metadata','server_id')" \
    | awk '{print $1 "=" $2}' | sort | tr '\n' ' ' | sed 's/ $//'
}
wait_for() {  # wait_for up|down
  for _ in $(seq 1 300); do
    if [ "$1" = up ] && up; then return 0; fi
    if [ "$1" = down ] && ! up && ! pgrep -x mariadbd >/dev/null; then return 0; fi
    sleep 0.1
  done
  return 1
}
start_server() {
  install -m 755 -o mysql -g root -d /run/mysqld
  mkdir -p "$(dirname "$LOG")"
  setsid nohup /usr/bin/mysqld_safe </dev/null >>"$LOG" 2>&1 &
  wait_for up || { echo "mariadb did not start; see $LOG and /var/log/mysql/error.log" >&2; exit 1; }
}
stop_server() {
  if up; then admin shutdown; fi
  wait_for down || { echo "mariadb did not stop" >&2; exit 1; }
}

case "$ACTION" in
  start)  ;;
  stop)   stop_server; exit 0 ;;
  status) if up; then echo "mariadb up: $(settings)"; else echo "mariadb down"; fi; exit 0 ;;
  *)      echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

if ! command -v mariadbd >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q mariadb-server >/dev/null
fi

if ! up || [ "$(settings)" != "$WANTED" ]; then
  mkdir -p "$CNF_DIR"
  cat > "$CNF" <<'CNFEOF'
# written by sluiceway scripts/services/mariadb.sh
[mysqld]
bind-address        = 127.0.0.1
port                = 3306
server_id           = 1
log_bin             = /var/lib/mysql/mysql-bin
binlog_format       = ROW
binlog_row_image    = FULL
binlog_row_metadata = FULL
expire_logs_days    = 1
CNFEOF
  # Debian's my.cnf includes mariadb.conf.d; a trimmed one may not: include it then.
  if ! my_print_defaults --mysqld | grep -q -- '--binlog_row_metadata=FULL'; then
    printf '\n!includedir %s/\n' "$CNF_DIR" >> "$MY_CNF"
  fi
  if up; then
    echo "mariadb runs with '$(settings)'; restarting it to apply the binlog settings" >&2
    stop_server
  fi
  start_server
fi

mariadb --protocol=socket -uroot <<'SQL'
CREATE DATABASE IF NOT EXISTS test;
CREATE USER IF NOT EXISTS 'test'@'127.0.0.1' IDENTIFIED BY 'test';
CREATE USER IF NOT EXISTS 'test'@'localhost' IDENTIFIED BY 'test';
GRANT ALL PRIVILEGES ON *.* TO 'test'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'test'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
now=$(settings)
if [ "$now" != "$WANTED" ]; then
  echo "mariadb is up but runs with '$now', not '$WANTED'; see $CNF" >&2; exit 1
fi
echo "mariadb $(mariadb --protocol=socket -uroot -N -e 'select version()') up on 127.0.0.1:3306 (root without password, test/test): $now"
