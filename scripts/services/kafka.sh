#!/usr/bin/env bash
# NOT Apache Kafka: librdkafka's built-in MOCK cluster (in-memory, speaks the Kafka wire
# protocol), taken from the librdkafka bundled in the confluent-kafka wheel (PyPI) and run as a
# standalone process. No real Kafka/Redpanda broker is installable from PyPI/npm/Debian here.
# Installs confluent-kafka into its own venv on first use; idempotent (safe to call when
# already running). State is in memory (lost on stop). CreateTopics is not supported by the
# mock: topics auto-create on produce, or pre-create them with KAFKA_MOCK_TOPICS.
# The listen port is random: the bootstrap servers are written to $DIR/bootstrap.txt, where
# DIR=${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}/kafka-mock (also data, log, pid).
# Usage: bash scripts/services/kafka.sh [start|stop|status]   (default: start)
#   env: KAFKA_MOCK_BROKERS=1, KAFKA_MOCK_TOPICS=a,b, KAFKA_MOCK_PARTITIONS=3
# Added to the shared script: topics with a chosen partition count while it runs (the mock
# cannot do CreateTopics, and auto-created topics get 4 partitions):
#   bash scripts/services/kafka.sh create-topic NAME [PARTITIONS]    (default 3)
#   bash scripts/services/kafka.sh delete-topic NAME
# They go through request files in $DIR/requests (NAME.create holding the partition count, or
# NAME.delete); the mock process applies them and renames each to .done (or .failed).
set -euo pipefail
ACTION=${1:-start}
DIR=${SLUICE_SERVICES_DIR:-${TMPDIR:-/tmp}/sluice-services}/kafka-mock
VENV=$DIR/venv; PIDF=$DIR/kafka.pid; BOOT=$DIR/bootstrap.txt
mkdir -p "$DIR"
alive() { [ -f "$PIDF" ] && kill -0 "$(cat "$PIDF")" 2>/dev/null; }
up() { alive && [ -s "$BOOT" ] && (exec 3<>"/dev/tcp/${HOSTPORT%:*}/${HOSTPORT##*:}") 2>/dev/null; }
HOSTPORT=$(cut -d, -f1 "$BOOT" 2>/dev/null || true)
case "$ACTION" in
  start)  ;;
  stop)   if alive; then kill "$(cat "$PIDF")"; for i in $(seq 1 50); do alive || break; sleep 0.1; done; fi
          rm -f "$PIDF" "$BOOT"; exit 0 ;;
  status) if up; then echo "kafka-mock up: $(cat "$BOOT")"; else echo "kafka-mock down"; fi; exit 0 ;;
  create-topic|delete-topic)
          NAME=${2:?usage: $0 $ACTION NAME [PARTITIONS]}; KIND=${ACTION%-topic}
          up || { echo "kafka-mock down: start it with bash scripts/services/kafka.sh" >&2; exit 1; }
          mkdir -p "$DIR/requests"; REQ=$DIR/requests/$NAME.$KIND
          echo "${3:-3}" > "$REQ.tmp"; mv "$REQ.tmp" "$REQ"
          for i in $(seq 1 100); do
            [ -f "$REQ.done" ] && { rm -f "$REQ.done"; echo "$ACTION $NAME: done"; exit 0; }
            [ -f "$REQ.failed" ] && { echo "$ACTION $NAME failed: $(cat "$REQ.failed")" >&2; rm -f "$REQ.failed"; exit 1; }
            sleep 0.05
          done
          echo "$ACTION $NAME: no answer from the mock in 5 s; see $DIR/kafka.log" >&2; exit 1 ;;
  *)      echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import confluent_kafka' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q confluent-kafka 2>&1 | grep -v 'is ignored' || true
fi
cat > "$DIR/mock_broker.py" <<'PY'
import ctypes, glob, os, signal, sys, time, confluent_kafka
lib = (glob.glob(os.path.dirname(confluent_kafka.__file__) + ".libs/librdkafka*.so*") or ["librdkafka.so.1"])[0]
rd = ctypes.CDLL(lib); P = ctypes.c_void_p
rd.rd_kafka_conf_new.restype = P
rd.rd_kafka_new.restype = P; rd.rd_kafka_new.argtypes = [ctypes.c_int, P, ctypes.c_char_p, ctypes.c_size_t]
rd.rd_kafka_mock_cluster_new.restype = P; rd.rd_kafka_mock_cluster_new.argtypes = [P, ctypes.c_int]
rd.rd_kafka_mock_cluster_bootstraps.restype = ctypes.c_char_p; rd.rd_kafka_mock_cluster_bootstraps.argtypes = [P]
rd.rd_kafka_mock_topic_create.argtypes = [P, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
rd.rd_kafka_mock_set_controller_id.argtypes = [P, ctypes.c_int]
rd.rd_kafka_mock_topic_delete.argtypes = [P, ctypes.c_char_p]
err = ctypes.create_string_buffer(512)
rk = rd.rd_kafka_new(0, rd.rd_kafka_conf_new(), err, 512)
mc = rd.rd_kafka_mock_cluster_new(rk, int(os.environ.get("KAFKA_MOCK_BROKERS", "1")))
rd.rd_kafka_mock_set_controller_id(mc, 1)   # CreateTopics still unsupported: pre-create via KAFKA_MOCK_TOPICS or auto-create on produce
for t in filter(None, os.environ.get("KAFKA_MOCK_TOPICS", "").split(",")):
    rd.rd_kafka_mock_topic_create(mc, t.encode(), int(os.environ.get("KAFKA_MOCK_PARTITIONS", "3")), 1)
boot = rd.rd_kafka_mock_cluster_bootstraps(mc).decode()
open(sys.argv[1] + ".tmp", "w").write(boot); os.replace(sys.argv[1] + ".tmp", sys.argv[1])
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
requests = os.path.join(os.path.dirname(sys.argv[1]), "requests"); os.makedirs(requests, exist_ok=True)
def apply(path):
    topic, kind = os.path.basename(path).rsplit(".", 1)
    if kind == "create":
        code = rd.rd_kafka_mock_topic_create(mc, topic.encode(), int(open(path).read() or 3), 1)
    else:
        code = rd.rd_kafka_mock_topic_delete(mc, topic.encode())
    if code:
        open(path + ".failed", "w").write(f"librdkafka error code {code}")
    else:
        open(path + ".done", "w").close()
    os.remove(path)
while True:
    for path in glob.glob(os.path.join(requests, "*.create")) + glob.glob(os.path.join(requests, "*.delete")):
        try: apply(path)
        except Exception as exc: open(path + ".failed", "w").write(repr(exc)); os.remove(path)
    time.sleep(0.02)
PY
if ! up; then
  rm -f "$BOOT"
  setsid nohup "$VENV/bin/python" "$DIR/mock_broker.py" "$BOOT" </dev/null >"$DIR/kafka.log" 2>&1 &
  echo $! > "$PIDF"
  for i in $(seq 1 100); do [ -s "$BOOT" ] && break; sleep 0.1; done
  HOSTPORT=$(cut -d, -f1 "$BOOT" 2>/dev/null || true)
fi
if up; then
  echo "kafka-mock (librdkafka $("$VENV/bin/python" -c 'import confluent_kafka as c;print(c.libversion()[0])')) up: bootstrap.servers=$(cat "$BOOT") (file $BOOT)"
else
  echo "kafka-mock did not start; see $DIR/kafka.log" >&2; exit 1
fi
