#!/usr/bin/env bash
# Local Apache Kafka (KRaft) and Elasticsearch on 127.0.0.1, without Docker.
#
#   bash infra/local/services.sh start  [kafka|es|all]   fetch if needed, start, wait until ready
#   bash infra/local/services.sh stop   [kafka|es|all]
#   bash infra/local/services.sh status [kafka|es|all]   exit 0 only when all asked-for are ready
#   bash infra/local/services.sh fetch                   only download (mvn) into the cache
#   bash infra/local/services.sh reset                   stop and delete the local data
#   bash infra/local/services.sh start es-secure         a second Elasticsearch with security on:
#       TLS (CA made by elasticsearch-certutil) and a file-realm user; URL, user, password and
#       CA path are written to .cache/run/es-secure/credentials.env (mode 600)
#
# Artifacts come from Maven Central through `mvn` and are cached under .cache/ (git-ignored):
#   Kafka:          org.apache.kafka:kafka_2.13 + its dependencies + a log4j2 backend
#   Elasticsearch:  org.elasticsearch.distribution.integ-test-zip:elasticsearch (zip)
# Data and logs live under .cache/run/. Starting twice is harmless.
#
# Settings (environment): KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (9093), ES_PORT (9200),
# ES_TRANSPORT_PORT (9300), KAFKA_VERSION (4.1.1), ES_VERSION (8.19.21), ES_HEAP (512m),
# KAFKA_HEAP (512m), ES_JAVA_HOME / JAVA_HOME, BPWATCH_CACHE (.cache), READY_TIMEOUT (120).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/infra/local"
CACHE=${BPWATCH_CACHE:-$ROOT/.cache}
RUN="$CACHE/run"
LOGS="$RUN/logs"
KAFKA_VERSION=${KAFKA_VERSION:-4.1.1}
ES_VERSION=${ES_VERSION:-8.19.21}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
KAFKA_SASL_PORT=${KAFKA_SASL_PORT:-9094}
ES_SECURE_PORT=${ES_SECURE_PORT:-9201}
ES_SECURE_TRANSPORT_PORT=${ES_SECURE_TRANSPORT_PORT:-9301}
ES_PORT=${ES_PORT:-9200}
ES_TRANSPORT_PORT=${ES_TRANSPORT_PORT:-9300}
ES_HEAP=${ES_HEAP:-512m}
KAFKA_HEAP=${KAFKA_HEAP:-512m}
READY_TIMEOUT=${READY_TIMEOUT:-120}
ES_USER=${ES_USER:-bpwatch-es}

KAFKA_HOME="$CACHE/kafka-$KAFKA_VERSION"
ES_HOME="$CACHE/elasticsearch-$ES_VERSION"
KAFKA_DATA="$RUN/kafka-data"
ES_DATA="$RUN/es-data"
ES_PID="$RUN/es-pid/es.pid"
ESS_DIR="$RUN/es-secure"
ESS_PID="$ESS_DIR/pid/es.pid"

say() { printf '[services] %s\n' "$*" >&2; }
die() { printf '[services] error: %s\n' "$*" >&2; exit 1; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed: $2"
}

java_bin() {
  local home=${1:-}
  if [[ -n "$home" && -x "$home/bin/java" ]]; then echo "$home/bin/java"; return; fi
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then echo "$JAVA_HOME/bin/java"; return; fi
  command -v java >/dev/null 2>&1 || die "Java 17+ is needed: apt-get install openjdk-17-jre-headless (or set JAVA_HOME)"
  command -v java
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# needs_start NAME PIDFILE READY_FN PORT FIX: 0 when it must be started, 1 when it already runs;
# stops the script when another program holds the port.
needs_start() {
  if alive "$2" && $3; then say "$1 already running on 127.0.0.1:$4"; return 1; fi
  if ! alive "$2" && port_open "$4"; then
    die "port $4 is taken by another program: stop it or set $5"
  fi
}

# ---------------------------------------------------------------------------------- fetch
fetch_kafka() {
  [[ -f "$KAFKA_HOME/.complete" ]] && return 0
  need mvn "apt-get install maven (Maven fetches Kafka's jars from Maven Central)"
  say "fetching Kafka $KAFKA_VERSION jars with mvn (first run only) ..."
  rm -rf "$KAFKA_HOME" && mkdir -p "$KAFKA_HOME/libs"
  mvn -q -B -f "$HERE/kafka-pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DoutputDirectory="$KAFKA_HOME/libs" \
    >"$CACHE/mvn-kafka.log" 2>&1 || die "mvn could not fetch Kafka; see $CACHE/mvn-kafka.log"
  touch "$KAFKA_HOME/.complete"
}

fetch_es() {
  [[ -f "$ES_HOME/.complete" ]] && return 0
  need mvn "apt-get install maven (Maven fetches Elasticsearch from Maven Central)"
  need unzip "apt-get install unzip"
  say "fetching Elasticsearch $ES_VERSION (integ-test zip) with mvn (first run only) ..."
  local dl="$CACHE/download"
  mkdir -p "$dl"
  mvn -q -B -f "$HERE/kafka-pom.xml" dependency:copy \
    -Dartifact="org.elasticsearch.distribution.integ-test-zip:elasticsearch:$ES_VERSION:zip" \
    -DoutputDirectory="$dl" >"$CACHE/mvn-es.log" 2>&1 \
    || die "mvn could not fetch Elasticsearch $ES_VERSION; see $CACHE/mvn-es.log"
  rm -rf "$ES_HOME" "$CACHE/es-unzip" && mkdir -p "$CACHE/es-unzip"
  unzip -q "$dl/elasticsearch-$ES_VERSION.zip" -d "$CACHE/es-unzip"
  mv "$CACHE/es-unzip/elasticsearch-$ES_VERSION" "$ES_HOME" && rm -rf "$CACHE/es-unzip"
  rm -f "$dl/elasticsearch-$ES_VERSION.zip"
  touch "$ES_HOME/.complete"
}

# ---------------------------------------------------------------------------------- kafka
kafka_ready() {
  port_open "$KAFKA_PORT" && grep -q "Kafka Server started" "$LOGS/kafka.log" 2>/dev/null
}

start_kafka() {
  needs_start kafka "$RUN/kafka.pid" kafka_ready "$KAFKA_PORT" "KAFKA_PORT (and BPWATCH_KAFKA_BROKERS)" || return 0
  fetch_kafka
  local java; java=$(java_bin "")
  mkdir -p "$KAFKA_DATA" "$LOGS"
  local props="$RUN/kafka-server.properties"
  cat >"$props" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_PLAINTEXT://127.0.0.1:$KAFKA_SASL_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
# SASL/SCRAM listener for security tests; users are created through the Admin API
# (AlterUserScramCredentials), e.g. by tests/integration/test_security.py
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs=$KAFKA_DATA
num.partitions=6
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
EOF
  local cp="$KAFKA_HOME/libs/*"
  local jopts=(-Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$HERE/kafka-log4j2.properties" -Dbpwatch.log.file="$LOGS/kafka.log")
  if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
    local cid; cid=$("$java" "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$LOGS/kafka-format.log")
    "$java" "${jopts[@]}" -cp "$cp" kafka.tools.StorageTool format -t "$cid" -c "$props" \
      >>"$LOGS/kafka-format.log" 2>&1 || die "formatting Kafka storage failed; see $LOGS/kafka-format.log"
  fi
  : >"$LOGS/kafka.log"
  nohup "$java" "${jopts[@]}" -cp "$cp" kafka.Kafka "$props" >"$LOGS/kafka.out" 2>&1 &
  echo $! >"$RUN/kafka.pid"
  say "kafka starting (pid $(cat "$RUN/kafka.pid"), log $LOGS/kafka.log)"
}

# ---------------------------------------------------------------------------------- elasticsearch
es_ready() {
  curl -fsS -m 5 "http://127.0.0.1:$ES_PORT/_cluster/health?wait_for_status=yellow&timeout=4s" >/dev/null 2>&1
}

as_es_user() {
  if [[ $(id -u) -eq 0 ]]; then
    id "$ES_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER" \
      || die "could not create user $ES_USER (Elasticsearch refuses to run as root)"
    chown -R "$ES_USER" "$ES_HOME" "$ES_DATA" "$LOGS/es" "$RUN/es-pid"
    runuser -u "$ES_USER" -- "$@"
  else
    "$@"
  fi
}

start_es() {
  needs_start elasticsearch "$ES_PID" es_ready "$ES_PORT" "ES_PORT (and BPWATCH_ES_URL)" || return 0
  need curl "apt-get install curl"
  fetch_es
  local java; java=$(java_bin "${ES_JAVA_HOME:-}")
  mkdir -p "$ES_DATA" "$LOGS/es" "$RUN/es-pid"
  cat >"$ES_HOME/config/elasticsearch.yml" <<EOF
# written by infra/local/services.sh
cluster.name: bpwatch-local
node.name: bpwatch-local-1
path.data: $ES_DATA
path.logs: $LOGS/es
network.host: 127.0.0.1
http.port: $ES_PORT
transport.port: $ES_TRANSPORT_PORT
discovery.type: single-node
xpack.security.enabled: false
action.destructive_requires_name: false
cluster.routing.allocation.disk.threshold_enabled: false
EOF
  local java_home; java_home=$(dirname "$(dirname "$(readlink -f "$java")")")
  rm -f "$ES_PID"
  as_es_user env ES_JAVA_HOME="$java_home" ES_JAVA_OPTS="-Xms$ES_HEAP -Xmx$ES_HEAP" \
    "$ES_HOME/bin/elasticsearch" -d -p "$ES_PID" >"$LOGS/es.out" 2>&1 \
    || die "elasticsearch did not start; see $LOGS/es.out and $LOGS/es/bpwatch-local.log"
  say "elasticsearch starting (pid $(cat "$ES_PID" 2>/dev/null), log $LOGS/es/bpwatch-local.log)"
}

# ---------------------------------------------------------------------------------- secured ES
ess_ready() {
  [[ -f "$ESS_DIR/credentials.env" ]] || return 1
  # shellcheck disable=SC1091
  ( . "$ESS_DIR/credentials.env"
    curl -fsS -m 5 --cacert "$BPWATCH_ES_CA_CERTS" -u "$BPWATCH_ES_USERNAME:$BPWATCH_ES_PASSWORD" \
      "$BPWATCH_ES_URL/_cluster/health?wait_for_status=yellow&timeout=4s" >/dev/null 2>&1 )
}

start_es_secure() {
  needs_start "secured elasticsearch" "$ESS_PID" ess_ready "$ES_SECURE_PORT" ES_SECURE_PORT || return 0
  need curl "apt-get install curl"
  fetch_es
  local java; java=$(java_bin "${ES_JAVA_HOME:-}")
  local java_home; java_home=$(dirname "$(dirname "$(readlink -f "$java")")")
  local conf="$ESS_DIR/config"
  local certs="$conf/certs"
  mkdir -p "$ESS_DIR/data" "$ESS_DIR/logs" "$ESS_DIR/pid" "$certs"
  if [[ ! -f "$ESS_DIR/credentials.env" ]]; then
    cp -r "$ES_HOME/config/." "$conf/" && rm -f "$conf/elasticsearch.keystore"
    ES_JAVA_HOME="$java_home" "$ES_HOME/bin/elasticsearch-certutil" ca --pem --silent --out "$certs/ca.zip" \
      >"$LOGS/es-secure-certutil.log" 2>&1 || die "certutil failed; see $LOGS/es-secure-certutil.log"
    unzip -q -o "$certs/ca.zip" -d "$certs"
    ES_JAVA_HOME="$java_home" "$ES_HOME/bin/elasticsearch-certutil" cert --pem --silent \
      --ca-cert "$certs/ca/ca.crt" --ca-key "$certs/ca/ca.key" --ip 127.0.0.1 --dns localhost \
      --name node --out "$certs/node.zip" >>"$LOGS/es-secure-certutil.log" 2>&1 \
      || die "certutil failed; see $LOGS/es-secure-certutil.log"
    unzip -q -o "$certs/node.zip" -d "$certs"
    local pw; pw=$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 20)
    ES_JAVA_HOME="$java_home" ES_PATH_CONF="$conf" "$ES_HOME/bin/elasticsearch-users" useradd bpwatch \
      -p "$pw" -r superuser >>"$LOGS/es-secure-certutil.log" 2>&1 || die "could not create the ES user"
    {
      echo "BPWATCH_ES_URL=https://127.0.0.1:$ES_SECURE_PORT"
      echo "BPWATCH_ES_USERNAME=bpwatch"
      echo "BPWATCH_ES_PASSWORD=$pw"
      echo "BPWATCH_ES_CA_CERTS=$certs/ca/ca.crt"
    } >"$ESS_DIR/credentials.env"
    chmod 600 "$ESS_DIR/credentials.env"
  fi
  {
    echo "# written by infra/local/services.sh (secured instance for security tests)"
    echo "cluster.name: bpwatch-secure"
    echo "node.name: bpwatch-secure-1"
    echo "path.data: $ESS_DIR/data"
    echo "path.logs: $ESS_DIR/logs"
    echo "network.host: 127.0.0.1"
    echo "http.port: $ES_SECURE_PORT"
    echo "transport.port: $ES_SECURE_TRANSPORT_PORT"
    echo "discovery.type: single-node"
    echo "xpack.security.enabled: true"
    echo "xpack.security.http.ssl.enabled: true"
    echo "xpack.security.http.ssl.key: certs/node/node.key"
    echo "xpack.security.http.ssl.certificate: certs/node/node.crt"
    echo "xpack.security.http.ssl.certificate_authorities: [certs/ca/ca.crt]"
    echo "cluster.routing.allocation.disk.threshold_enabled: false"
  } >"$conf/elasticsearch.yml"
  rm -f "$ESS_PID"
  local runner=()
  if [[ $(id -u) -eq 0 ]]; then
    id "$ES_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$ES_USER"
    chown -R "$ES_USER" "$ES_HOME" "$ESS_DIR/data" "$ESS_DIR/logs" "$ESS_DIR/pid" "$conf"
    runner=(runuser -u "$ES_USER" --)
  fi
  "${runner[@]}" env ES_JAVA_HOME="$java_home" ES_PATH_CONF="$conf" \
    ES_JAVA_OPTS="-Xms$ES_HEAP -Xmx$ES_HEAP" "$ES_HOME/bin/elasticsearch" -d -p "$ESS_PID" \
    >"$LOGS/es-secure.out" 2>&1 || die "secured elasticsearch did not start; see $LOGS/es-secure.out"
  say "secured elasticsearch starting on https://127.0.0.1:$ES_SECURE_PORT (credentials: $ESS_DIR/credentials.env)"
}

# ---------------------------------------------------------------------------------- common
wait_ready() {  # name check-fn log
  local name=$1 check=$2 log=$3 waited=0
  until $check; do
    if (( waited >= READY_TIMEOUT )); then
      tail -n 20 "$log" >&2 2>/dev/null || true
      die "$name was not ready after ${READY_TIMEOUT}s; full log: $log"
    fi
    sleep 1; waited=$((waited + 1))
  done
  say "$name ready after ${waited}s"
}

stop_pid() {  # name pidfile
  local name=$1 pidfile=$2
  if alive "$pidfile"; then
    local pid; pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
    say "$name stopped"
  else
    say "$name not running"
  fi
  rm -f "$pidfile"
}

status_one() {  # name pidfile check
  if alive "$2" && $3; then say "$1: ready (pid $(cat "$2"))"; return 0; fi
  say "$1: not running"; return 1
}

cmd=${1:-status}
what=${2:-all}
mkdir -p "$CACHE" "$RUN" "$LOGS"
case "$cmd" in
  fetch) fetch_kafka; fetch_es ;;
  start)
    start=$(date +%s)
    [[ $what == all || $what == kafka ]] && start_kafka
    [[ $what == all || $what == es ]] && start_es
    [[ $what == all || $what == kafka ]] && wait_ready kafka kafka_ready "$LOGS/kafka.log"
    [[ $what == all || $what == es ]] && wait_ready elasticsearch es_ready "$LOGS/es/bpwatch-local.log"
    if [[ $what == es-secure ]]; then
      start_es_secure
      wait_ready "secured elasticsearch" ess_ready "$ESS_DIR/logs/bpwatch-secure.log"
    fi
    say "up in $(( $(date +%s) - start ))s"
    ;;
  stop)
    [[ $what == all || $what == kafka ]] && stop_pid kafka "$RUN/kafka.pid"
    [[ $what == all || $what == es ]] && stop_pid elasticsearch "$ES_PID"
    if [[ $what == all || $what == es-secure ]] && alive "$ESS_PID"; then stop_pid "secured elasticsearch" "$ESS_PID"; fi
    true
    ;;
  status)
    rc=0
    [[ $what == all || $what == kafka ]] && { status_one kafka "$RUN/kafka.pid" kafka_ready || rc=1; }
    [[ $what == all || $what == es ]] && { status_one elasticsearch "$ES_PID" es_ready || rc=1; }
    [[ $what == es-secure ]] && { status_one "secured elasticsearch" "$ESS_PID" ess_ready || rc=1; }
    exit $rc
    ;;
  reset)
    "$0" stop all
    rm -rf "$KAFKA_DATA" "$ES_DATA" "$LOGS" "$ESS_DIR"
    say "local data removed"
    ;;
  *) die "unknown command '$cmd': use start, stop, status, fetch or reset" ;;
esac
