#!/usr/bin/env bash
# Local infrastructure for the demo and the tests: one PostgreSQL 15 cluster
# (wal_level=logical) and one single-node Apache Kafka broker in KRaft mode,
# both on loopback, both living under $STACK_DIR.
#
#   scripts/stack.sh up      install what is missing, start both (idempotent)
#   scripts/stack.sh down    stop both and delete $STACK_DIR
#   scripts/stack.sh status  say what runs
#
# Environment (defaults in brackets):
#   STACK_DIR   [<repo>/.stack]   data, logs, pid files
#   PG_PORT     [55432]           PostgreSQL port on 127.0.0.1
#   KAFKA_PORT  [59092]           Kafka broker port on 127.0.0.1 (controller: +1)
#   PG_FSYNC    [on]              "off" makes throwaway test clusters faster
#   PG_SSL_DIR  []                with server.crt/server.key: TLS on (tests)
#   PG_MAX_CONNECTIONS [600]      max_connections (tests of the connection budget)
#   PG_MAX_SLOTS [300]            max_replication_slots and max_wal_senders
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK_DIR="${STACK_DIR:-$REPO_DIR/.stack}"
PG_PORT="${PG_PORT:-55432}"
KAFKA_PORT="${KAFKA_PORT:-59092}"
KAFKA_CONTROLLER_PORT=$((KAFKA_PORT + 1))
PG_FSYNC="${PG_FSYNC:-on}"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$REPO_DIR/scripts/kafka/pom.xml")"
KAFKA_LIBS="${KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/cdc-bridge/kafka-$KAFKA_VERSION/libs}"

log() { echo "[stack] $*" >&2; }

# --- installation ------------------------------------------------------------

ensure_packages() {
    local missing=()
    [[ -x "$PG_BIN/initdb" ]] || missing+=(postgresql-15 postgresql-client-15)
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
    command -v cc >/dev/null || missing+=(build-essential)
    if ((${#missing[@]})); then
        log "installing missing packages: ${missing[*]}"
        if [[ $(id -u) -ne 0 ]]; then
            log "not root: install them yourself (apt-get install ${missing[*]}) and retry"
            exit 1
        fi
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

ensure_kafka_jars() {
    if [[ -f "$KAFKA_LIBS/kafka_2.13-$KAFKA_VERSION.jar" ]]; then
        return
    fi
    log "resolving Apache Kafka $KAFKA_VERSION jars with maven into $KAFKA_LIBS"
    mkdir -p "$KAFKA_LIBS.tmp"
    (cd "$REPO_DIR/scripts/kafka" &&
        mvn -q -B dependency:copy-dependencies -DoutputDirectory="$KAFKA_LIBS.tmp")
    rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
}

# PostgreSQL refuses to run as root; run its binaries as the postgres user then.
as_pg_user() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# --- PostgreSQL -----------------------------------------------------------------

pg_up() {
    local data="$STACK_DIR/pg/data"
    mkdir -p "$STACK_DIR/pg"
    [[ $(id -u) -eq 0 ]] && chown -R postgres: "$STACK_DIR/pg"
    if [[ ! -f "$data/PG_VERSION" ]]; then
        log "initdb $data"
        as_pg_user "$PG_BIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null
        cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$STACK_DIR/pg'
wal_level = ${PG_WAL_LEVEL:-logical}
max_replication_slots = ${PG_MAX_SLOTS:-300}
max_wal_senders = ${PG_MAX_SLOTS:-300}
max_connections = ${PG_MAX_CONNECTIONS:-600}
fsync = $PG_FSYNC
synchronous_commit = $PG_FSYNC
full_page_writes = $PG_FSYNC
shared_buffers = 256MB
max_slot_wal_keep_size = 4GB
EOF
        echo "host replication all 127.0.0.1/32 trust" >>"$data/pg_hba.conf"
        if [[ -n "${PG_SSL_DIR:-}" ]]; then enable_ssl "$data"; fi
    fi
    if as_pg_user "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "PostgreSQL already running on 127.0.0.1:$PG_PORT"
        return
    fi
    as_pg_user "$PG_BIN/pg_ctl" -D "$data" -l "$STACK_DIR/pg/postgres.log" -w -t 60 start >/dev/null
    log "PostgreSQL 15 running on 127.0.0.1:$PG_PORT"
}

# Tests of TLS: server certificate from $PG_SSL_DIR (server.crt/key), and
# the role tls_user may connect over TCP only with TLS.
enable_ssl() {
    local data=$1
    cp "$PG_SSL_DIR/server.crt" "$PG_SSL_DIR/server.key" "$data/"
    chmod 600 "$data/server.key"
    if [[ $(id -u) -eq 0 ]]; then chown postgres: "$data/server.crt" "$data/server.key"; fi
    printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >>"$data/postgresql.conf"
    printf '%s\n' \
        "local all all trust" \
        "hostnossl all tls_user 127.0.0.1/32 reject" \
        "hostnossl replication tls_user 127.0.0.1/32 reject" \
        "host all all 127.0.0.1/32 trust" \
        "host replication all 127.0.0.1/32 trust" >"$data/pg_hba.conf"
}

pg_down() {
    local data="$STACK_DIR/pg/data"
    if [[ -f "$data/PG_VERSION" ]]; then
        as_pg_user "$PG_BIN/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

# --- Kafka ------------------------------------------------------------------------

kafka_classpath() { echo "$KAFKA_LIBS/*"; }

kafka_running() {
    [[ -f "$STACK_DIR/kafka/pid" ]] && kill -0 "$(cat "$STACK_DIR/kafka/pid")" 2>/dev/null
}

kafka_up() {
    local dir="$STACK_DIR/kafka"
    mkdir -p "$dir"
    if kafka_running; then
        log "Kafka already running on 127.0.0.1:$KAFKA_PORT"
        return
    fi
    cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=3
transaction.state.log.num.partitions=3
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=67108864
EOF
    cat >"$dir/log4j2.properties" <<EOF
rootLogger.level=WARN
rootLogger.appenderRef.file.ref=file
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
EOF
    if [[ ! -f "$dir/data/meta.properties" ]]; then
        local cluster_id
        cluster_id="$(java -cp "$(kafka_classpath)" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
        java -Dlog4j2.configurationFile="$dir/log4j2.properties" -cp "$(kafka_classpath)" \
            kafka.tools.StorageTool format -t "$cluster_id" -c "$dir/server.properties" >"$dir/format.log" 2>&1
    fi
    # setsid: the broker must survive the shell that started it (demo, CI step).
    setsid java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$dir/log4j2.properties" \
        -cp "$(kafka_classpath)" kafka.Kafka "$dir/server.properties" \
        >"$dir/stdout.log" 2>&1 </dev/null &
    echo $! >"$dir/pid"
    wait_for_port "$KAFKA_PORT" 90 || {
        log "Kafka did not start; see $dir/stdout.log and $dir/server.log"
        tail -20 "$dir/stdout.log" >&2 || true
        exit 1
    }
    log "Kafka $KAFKA_VERSION (KRaft) running on 127.0.0.1:$KAFKA_PORT"
}

kafka_down() {
    local pidfile="$STACK_DIR/kafka/pid"
    if kafka_running; then
        local pid
        pid="$(cat "$pidfile")"
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
}

wait_for_port() {
    local port=$1 seconds=$2
    for _ in $(seq 1 $((seconds * 4))); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.25
    done
    return 1
}

# --- commands -----------------------------------------------------------------------

case "${1:-}" in
up)
    ensure_packages
    ensure_kafka_jars
    mkdir -p "$STACK_DIR"
    pg_up
    kafka_up
    ;;
down)
    kafka_down
    pg_down
    rm -rf "$STACK_DIR"
    log "stopped and removed $STACK_DIR"
    ;;
pg-up)
    # A PostgreSQL cluster alone (tests use it for a second server).
    ensure_packages
    mkdir -p "$STACK_DIR"
    pg_up
    ;;
pg-down) pg_down ;;
stop-kafka) kafka_down ;;
start-kafka) kafka_up ;;
status)
    as_pg_user "$PG_BIN/pg_ctl" -D "$STACK_DIR/pg/data" status >/dev/null 2>&1 &&
        echo "postgresql: running on 127.0.0.1:$PG_PORT" || echo "postgresql: stopped"
    kafka_running && echo "kafka: running on 127.0.0.1:$KAFKA_PORT" || echo "kafka: stopped"
    ;;
*)
    echo "usage: $0 up|down|status|pg-up|pg-down|stop-kafka|start-kafka" >&2
    exit 2
    ;;
esac
