#!/usr/bin/env bash
# bench/compare.sh: linechat against other servers, on loopback, same workload, same machine.
#
# For every scenario and repetition it starts a FRESH server of each kind (interleaved:
# linechat, redis, nats, linechat, redis, nats, ...), runs linechat-bench against it with
# --server-pid and --json, stops exactly that server by its PID, and at the end prints a
# report of the medians over the repetitions. RECORD=1 also writes it to BENCHMARKS.md.
#
# Usage: bench/compare.sh            (all scenarios, 3 repetitions, 10 s each; prints the report)
#        RECORD=1 bench/compare.sh   (the same, and writes <repo>/BENCHMARKS.md)
#        SERVERS="linechat-irc ngircd inspircd linechat-mixed" SCENARIOS="S1 S2 S3" bench/compare.sh
#        SERVERS="linechat-tls linechat" SCENARIOS="S1 S3 S5" bench/compare.sh   (TLS vs plaintext;
#                                                         make bench-tls)
#        SERVERS="linechat-cluster linechat" SCENARIOS="S1 S3" bench/compare.sh   (three nodes over
#                                                         NATS JetStream vs one; make bench-cluster)
# Environment overrides:
#   SCENARIOS="S1 S2"   which scenarios (S1 room, S2 saturate, S3 crowd, S4 idle, S5 churn:
#                       connections opened, shown the prompt and closed, 32 at once)
#   REPS=1              repetitions per scenario and server
#   DURATION=3          measured seconds per run
#   SERVERS="linechat redis nats"   which servers; the first is the one the ratios are about.
#                       linechat, redis, nats: the line protocol, Redis pub/sub, NATS.
#                       linechat-irc, ngircd, inspircd: IRC (linechat via --listen irc://).
#                       linechat-mixed: one linechat room, half line-protocol, half IRC clients.
#                       linechat-store: the line protocol with --data-dir (a fresh directory per
#                       run, default --fsync-interval 1s); linechat-fsync: the same with
#                       --fsync-interval always.
#                       linechat-ws-line, linechat-ws-irc: the line protocol or IRC over
#                       WebSocket (the http:// listener), e.g.
#                       SERVERS="linechat linechat-ws-line linechat-ws-irc" SCENARIOS="S1 S3 S4"
#                       linechat-before: the line protocol on BEFORE_BIN, an earlier build,
#                       for a redesign's before-and-after in one session.
#                       linechat-tls, linechat-ircs: the line protocol over line+tls://, IRC
#                       over ircs://, with a certificate made for the run (TLS_KEY).
#                       linechat-cluster: nats-server -js on PORT and three linechat nodes (a, b,
#                       c) on PORT+1..PORT+3 with --cluster; the bench spreads the clients over
#                       the nodes round-robin, counts the CPU of all four processes, and reports
#                       the latency of the deliveries that crossed between nodes apart.
#                       linechat-cluster-before: the same cluster of BEFORE_BIN nodes.
#   TLS_KEY=ec          the TLS servers' key: ec (ECDSA P-256, the default) or rsa (RSA 2048)
#   RECORD=1            write the report to <repo>/BENCHMARKS.md (otherwise it is only printed
#                       and kept in the results directory)
#   OUT=path            write the report here instead (default <results>/report.md, or
#                       BENCHMARKS.md with RECORD=1)
#   RESULTS=dir         where the JSON of every run goes (default target/bench-results/<time>)
#   BASE_PORT=17000     first loopback port used (one or two new ports per run)
#   SKIP_BUILD=1        do not run cargo build --release
#   LINECHAT_BIN=...  BENCH_BIN=...   binaries (default <target dir>/release/linechat[-bench])
#   BEFORE_BIN=...    the earlier linechat that linechat-before runs (e.g. built from a
#                     worktree of the commit before a change: git worktree add ../before REV)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SCENARIOS=${SCENARIOS:-"S1 S2 S3 S4"}
SERVERS=${SERVERS:-"linechat redis nats"}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
RECORD=${RECORD:-0}
RESULTS=${RESULTS:-$TARGET_DIR/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
OUT=${OUT:-}
if [[ -z $OUT ]]; then
    if [[ $RECORD == 1 ]]; then OUT=$ROOT/BENCHMARKS.md; else OUT=$RESULTS/report.md; fi
fi
BASE_PORT=${BASE_PORT:-17000}
SKIP_BUILD=${SKIP_BUILD:-0}
LINECHAT_BIN=${LINECHAT_BIN:-$TARGET_DIR/release/linechat}
BEFORE_BIN=${BEFORE_BIN:-}
BENCH_BIN=${BENCH_BIN:-$TARGET_DIR/release/linechat-bench}
MSG_SIZE=64
# The IRC peers' operator block; the bench OPERs its senders with it (see irc_bench_args).
OPER_NAME=bench
OPER_PASS=benchpass
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DURATION must be a number of seconds"
awk -v d="$DURATION" 'BEGIN { exit !(d > 0 && d <= 600) }' || die "DURATION must be in (0, 600]"
for s in $SCENARIOS; do
    case $s in S1 | S2 | S3 | S4 | S5) ;; *) die "unknown scenario $s (use S1 S2 S3 S4 S5)" ;; esac
done
ALL_SERVERS="linechat redis nats linechat-irc ngircd inspircd linechat-mixed linechat-before linechat-store linechat-fsync linechat-tls linechat-ircs linechat-ws-line linechat-ws-irc linechat-cluster linechat-cluster-before"
for s in $SERVERS; do
    [[ " $ALL_SERVERS " == *" $s "* ]] || die "unknown server $s (use $ALL_SERVERS)"
done
has_server() { [[ " $SERVERS " == *" $1 "* ]]; }

# --- cleanup: stop only the servers this script started, by their PIDs -------------------------
# SERVER_PIDS: the processes of the server under test (a cluster: its broker, then its nodes);
# stopped last first, so a cluster's nodes leave while their broker is still there.
SERVER_PIDS=()
CONF_DIR=$(mktemp -d "${TMPDIR:-/tmp}/linechat-compare.XXXXXX")
stop_server() {
    local i
    for ((i = ${#SERVER_PIDS[@]} - 1; i >= 0; i--)); do
        stop_pid "${SERVER_PIDS[i]}"
    done
    SERVER_PIDS=()
}
stop_pid() {
    local pid=$1
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "server $pid ignored SIGTERM for 5 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}
trap 'stop_server; rm -rf "$CONF_DIR"' EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- tools ------------------------------------------------------------------------------------
pkgs=()
has_server redis && ! command -v redis-server >/dev/null && pkgs+=(redis-server)
{ has_server nats || has_server linechat-cluster || has_server linechat-cluster-before; } && ! command -v nats-server >/dev/null && pkgs+=(nats-server)
has_server ngircd && ! command -v ngircd >/dev/null && pkgs+=(ngircd)
has_server inspircd && ! command -v inspircd >/dev/null && pkgs+=(inspircd)
if ((${#pkgs[@]})); then
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    log "installing ${pkgs[*]} with apt-get"
    $SUDO apt-get update -qq
    # Where policy allows it, a package's postinst starts its own daemon on its default port;
    # the runs use ports from BASE_PORT on, so such a daemon is left alone.
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
command -v python3 >/dev/null || die "python3 is needed to write the report"

if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release --bins"
    (cd "$ROOT" && cargo build --release --bins)
fi
[[ -x $BENCH_BIN ]] || die "no bench binary at $BENCH_BIN"
if has_server linechat || has_server linechat-irc || has_server linechat-mixed ||
    has_server linechat-store || has_server linechat-fsync || has_server linechat-tls ||
    has_server linechat-ircs || has_server linechat-ws-line || has_server linechat-ws-irc ||
    has_server linechat-cluster; then
    [[ -x $LINECHAT_BIN ]] || die "no linechat binary at $LINECHAT_BIN"
fi
if has_server linechat-before || has_server linechat-cluster-before; then
    [[ -n $BEFORE_BIN && -x $BEFORE_BIN ]] || die "linechat-before needs BEFORE_BIN, an earlier linechat binary"
fi

# Thousands of sockets: raise the open-file limit for the servers we start (and the bench).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < 20100)) && [[ " $SCENARIOS " == *" S4 "* ]]; then
    log "warning: open-file limit $(ulimit -n) may be too low for S4 (10000 clients)"
fi

mkdir -p "$RESULTS"
: >"$RESULTS/commands.txt"

# The TLS servers' certificate, made for this run (no key is kept in the repository).
TLS_KEY=${TLS_KEY:-ec}
TLS_CERT=$CONF_DIR/tls-cert.pem
TLS_KEY_FILE=$CONF_DIR/tls-key.pem
if has_server linechat-tls || has_server linechat-ircs; then
    command -v openssl >/dev/null || die "openssl is needed to make the TLS servers' certificate"
    case $TLS_KEY in
    ec) newkey=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    rsa) newkey=(-newkey rsa:2048) ;;
    *) die "TLS_KEY must be ec or rsa" ;;
    esac
    openssl req -x509 "${newkey[@]}" -nodes -keyout "$TLS_KEY_FILE" -out "$TLS_CERT" -days 2 \
        -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null ||
        die "openssl could not make a certificate"
fi

# --- scenarios ------------------------------------------------------------------------------
scenario_title() {
    case $1 in
    S1) echo "S1 room: 100 clients, 10 senders, 2000 msgs/s total" ;;
    S2) echo "S2 saturate: 100 clients, 10 senders, as fast as the window allows" ;;
    S3) echo "S3 crowd: 2000 clients, 20 senders, 200 msgs/s total" ;;
    S4) echo "S4 idle: 10000 connected idle clients" ;;
    S5) echo "S5 churn: new connections, 32 at once, each shown the prompt and closed" ;;
    esac
}
scenario_args() {
    case $1 in
    S1) echo "--clients 100 --senders 10 --rate 2000" ;;
    S2) echo "--clients 100 --senders 10 --rate 0" ;;
    S3) echo "--clients 2000 --senders 20 --rate 200 --connect-timeout 30 --settle-max 30" ;;
    S4) echo "--clients 10000 --senders 0 --connect-timeout 60 --settle-max 60" ;;
    S5) echo "--churn --connect-concurrency 32" ;;
    esac
}

port_listening() { # is 127.0.0.1:$1 in LISTEN state?
    local hex
    hex=$(printf '%04X' "$1")
    grep -qi "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp
}

# The IRC peers, configured as generously as they allow. What they cannot turn off is in
# BENCHMARKS.md ("IRC peers").
write_ngircd_conf() { # $1 port, $2 file
    cat >"$2" <<CONF
[Global]
    Name = bench.ngircd.local
    Info = linechat-bench peer
    AdminInfo1 = linechat-bench
    AdminEMail = bench@localhost
    Listen = 127.0.0.1
    Ports = $1
    MotdPhrase = linechat-bench
[Limits]
    MaxConnections = 0
    MaxConnectionsIP = 0
    MaxJoins = 0
    MaxNickLength = 30
    # 0 turns the penalty time off; users still get at most 3 commands per loop, 10 with +F.
    MaxPenaltyTime = 0
    PingTimeout = 600
    PongTimeout = 120
[Options]
    DNS = no
    Ident = no
    PAM = no
    RequireAuthPing = no
[Operator]
    Name = $OPER_NAME
    Password = $OPER_PASS
CONF
}

write_inspircd_conf() { # $1 port, $2 file, $3 its directory
    cat >"$2" <<CONF
<config format="xml">
<server name="bench.inspircd.local" description="linechat-bench peer" network="bench">
<admin name="bench" nick="bench" email="bench@localhost">
<bind address="127.0.0.1" port="$1" type="clients">
<path configdir="$3" datadir="$3" logdir="$3">
<pid file="$3/inspircd.pid">
<log method="file" type="* -USERINPUT -USEROUTPUT" level="default" target="$3/inspircd.log">
<dns server="127.0.0.1" timeout="1">
<connect name="bench" allow="*" maxchans="100" timeout="60" pingfreq="600"
         hardsendq="64M" softsendq="64M" recvq="16M"
         threshold="1000000000" commandrate="1000000000" fakelag="no"
         localmax="100000" globalmax="100000" maxconnwarn="no" limit="100000"
         resolvehostnames="no" useident="no">
<performance netbuffersize="65536" somaxconn="4096" softlimit="100000"
             clonesonconnect="no" quietbursts="yes">
<channels users="100" opers="100">
<class name="bench" commands="*" usermodes="*" chanmodes="*"
       privs="users/flood/no-throttle users/flood/increased-buffers users/flood/no-fakelag">
<type name="bench" classes="bench">
<oper name="$OPER_NAME" password="$OPER_PASS" host="*@*" type="bench">
CONF
}

# $1 server, $2 port, $3 second port (the IRC listener of linechat-mixed) -> the command line
server_cmd() {
    local conf=$CONF_DIR/$1-$2
    case $1 in
    linechat) echo "$LINECHAT_BIN --rate-limit 0 --listen 127.0.0.1:$2 --max-clients 20000" ;;
    linechat-before) echo "$BEFORE_BIN --rate-limit 0 --listen 127.0.0.1:$2 --max-clients 20000" ;;
    linechat-store) echo "$LINECHAT_BIN --rate-limit 0 --listen 127.0.0.1:$2 --max-clients 20000 --data-dir $conf/data" ;;
    linechat-fsync) echo "$LINECHAT_BIN --rate-limit 0 --listen 127.0.0.1:$2 --max-clients 20000 --data-dir $conf/data --fsync-interval always" ;;
    # maxclients: Redis' default of 10000 would refuse part of S4.
    redis) echo "redis-server --port $2 --bind 127.0.0.1 --save '' --appendonly no --maxclients 20000" ;;
    nats) echo "nats-server -a 127.0.0.1 -p $2" ;;
    linechat-irc) echo "$LINECHAT_BIN --rate-limit 0 --listen irc://127.0.0.1:$2 --max-clients 20000" ;;
    linechat-mixed) echo "$LINECHAT_BIN --rate-limit 0 --listen 127.0.0.1:$2 --listen irc://127.0.0.1:$3 --max-clients 20000" ;;
    linechat-tls) echo "$LINECHAT_BIN --rate-limit 0 --listen line+tls://127.0.0.1:$2 --max-clients 20000 --tls-cert $TLS_CERT --tls-key $TLS_KEY_FILE" ;;
    linechat-ircs) echo "$LINECHAT_BIN --rate-limit 0 --listen ircs://127.0.0.1:$2 --max-clients 20000 --tls-cert $TLS_CERT --tls-key $TLS_KEY_FILE" ;;
    linechat-ws-line | linechat-ws-irc) echo "$LINECHAT_BIN --rate-limit 0 --listen http://127.0.0.1:$2 --max-clients 20000" ;;
    ngircd) echo "ngircd --nodaemon --config $conf/ngircd.conf" ;;
    inspircd) echo "inspircd --nofork --runasroot --config $conf/inspircd.conf" ;;
    # Shown in the report; start_cluster runs the same commands one by one.
    linechat-cluster | linechat-cluster-before)
        local all n
        all="$(broker_cmd "$2" "$conf")"
        for n in 1 2 3; do all+="; $(node_cmd "$2" "$n" "$(cluster_bin "$1")")"; done
        echo "$all"
        ;;
    esac
}

# The cluster's broker on $1 (its store under $2) and its node $2 (1, 2, 3: a, b, c) on $1+$2.
broker_cmd() { echo "nats-server -a 127.0.0.1 -p $1 -js -sd $2/js"; }
cluster_bin() { if [[ $1 == linechat-cluster-before ]]; then echo "$BEFORE_BIN"; else echo "$LINECHAT_BIN"; fi; }
node_cmd() { # $1 broker port, $2 node number, $3 binary
    local name port
    name=$(echo "a b c" | cut -d' ' -f"$2")
    if [[ $1 =~ ^[0-9]+$ ]]; then port=$(($1 + $2)); else port="$1+$2"; fi
    echo "$3 --rate-limit 0 --listen 127.0.0.1:$port --max-clients 20000 --cluster nats://127.0.0.1:$1 --node-name $name"
}
# --addr of each node the bench's clients are spread over.
bench_addr_args() { # $1 server, $2 port
    if [[ $1 == linechat-cluster* ]]; then
        local n
        for n in 1 2 3; do
            if [[ $2 =~ ^[0-9]+$ ]]; then echo "--addr 127.0.0.1:$(($2 + n))"; else echo "--addr 127.0.0.1:$2+$n"; fi
        done | paste -sd' '
    else
        echo "--addr 127.0.0.1:$2"
    fi
}
# For the report: the PIDs the bench is given.
pid_args() { if [[ $1 == linechat-cluster* ]]; then echo "PID_BROKER,PID_A,PID_B,PID_C"; else echo PID; fi; }

# $1 server, $2 port, $3 second port -> linechat-bench's protocol arguments
bench_proto_args() {
    case $1 in
    linechat | redis | nats) echo "--proto $1" ;;
    linechat-before | linechat-store | linechat-fsync) echo "--proto linechat" ;;
    linechat-irc) echo "--proto irc" ;;
    linechat-mixed) echo "--proto mixed --irc-addr 127.0.0.1:$3" ;;
    linechat-tls) echo "--proto linechat --tls" ;;
    linechat-ircs) echo "--proto irc --tls" ;;
    linechat-ws-line) echo "--proto ws-line" ;;
    linechat-ws-irc) echo "--proto ws-irc" ;;
    linechat-cluster | linechat-cluster-before) echo "--proto linechat" ;;
    # +F: no command throttling, and only an operator may set it. ngIRCd listens with a
    # backlog of 10 and accepts one connection per loop pass: more connects at once overflow
    # the backlog, and the dropped SYNs cost seconds of retries (setup only, not measured).
    ngircd) echo "--proto irc --irc-oper $OPER_NAME:$OPER_PASS --irc-sender-modes +F --connect-concurrency 8" ;;
    # The operator class has the no-throttle, no-fakelag and increased-buffers privileges.
    inspircd) echo "--proto irc --irc-oper $OPER_NAME:$OPER_PASS" ;;
    esac
}

server_version() {
    case $1 in
    linechat | linechat-irc | linechat-mixed | linechat-store | linechat-fsync | linechat-tls | linechat-ircs | linechat-ws-*)
        "$LINECHAT_BIN" --version 2>/dev/null | head -n1
        ;;
    linechat-cluster-before)
        echo "$("$BEFORE_BIN" --version 2>/dev/null | head -n1) ×3 with $(nats-server --version 2>/dev/null | head -n1) -js"
        ;;
    linechat-cluster)
        echo "$("$LINECHAT_BIN" --version 2>/dev/null | head -n1) ×3 with $(nats-server --version 2>/dev/null | head -n1) -js"
        ;;
    linechat-before) "$BEFORE_BIN" --version 2>/dev/null | head -n1 ;;
    redis) redis-server --version 2>/dev/null | head -n1 ;;
    nats) nats-server --version 2>/dev/null | head -n1 ;;
    ngircd) ngircd --version 2>/dev/null | head -n1 ;;
    inspircd) inspircd --version 2>/dev/null | head -n1 ;;
    esac
}

# Starts $1 (a command line) with its output to $2 and waits until 127.0.0.1:$3 listens;
# adds its PID to SERVER_PIDS.
start_one() {
    local pid
    # The command line is split into its words on purpose; a simple command run with & is
    # the process itself, so $! is the PID to measure and stop.
    # shellcheck disable=SC2086
    $1 >"$2" 2>&1 &
    pid=$!
    SERVER_PIDS+=("$pid")
    for _ in $(seq 100); do
        port_listening "$3" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    log "'$1' did not start listening on 127.0.0.1:$3; its log:"
    tail -n 20 "$2" >&2 || true
    return 1
}

# The broker and three nodes, each waited for in turn (a node connects to the broker before
# it listens).
start_cluster() { # $1 port, $2 log file base, $3 the nodes' binary
    local conf=$CONF_DIR/linechat-cluster-$1 n
    mkdir -p "$conf/js"
    start_one "$(broker_cmd "$1" "$conf")" "$2.broker.log" "$1" || { stop_server; return 1; }
    for n in 1 2 3; do
        start_one "$(node_cmd "$1" "$n" "$3")" "$2.node$n.log" "$(($1 + n))" || { stop_server; return 1; }
    done
}

start_server() { # $1 server, $2 port, $3 second port, $4 log file; sets SERVER_PIDS
    local conf=$CONF_DIR/$1-$2 cmd
    if [[ $1 == linechat-cluster* ]]; then
        start_cluster "$2" "${4%.log}" "$(cluster_bin "$1")"
        return
    fi
    mkdir -p "$conf"
    case $1 in
    ngircd) write_ngircd_conf "$2" "$conf/ngircd.conf" ;;
    inspircd) write_inspircd_conf "$2" "$conf/inspircd.conf" "$conf" ;;
    esac
    cmd=$(server_cmd "$1" "$2" "$3")
    # eval for redis's '' (an empty argument); exec so that $! is the server itself, the PID
    # the bench measures and stop_server signals.
    eval "exec $cmd" >"$4" 2>&1 &
    SERVER_PIDS=("$!")
    for _ in $(seq 100); do
        if port_listening "$2" && { [[ $1 != linechat-mixed ]] || port_listening "$3"; }; then
            return 0
        fi
        kill -0 "${SERVER_PIDS[0]}" 2>/dev/null || break
        sleep 0.1
    done
    log "$1 did not start listening on 127.0.0.1:$2; its log:"
    tail -n 20 "$4" >&2 || true
    stop_server
    return 1
}

port=$BASE_PORT
run_no=0
total=0
for _ in $SCENARIOS; do for _ in $(seq "$REPS"); do for _ in $SERVERS; do total=$((total + 1)); done; done; done
for sc in $SCENARIOS; do
    for rep in $(seq "$REPS"); do
        for srv in $SERVERS; do
            run_no=$((run_no + 1))
            port=$((port + 1))
            port2=$((port + 1)) # linechat-mixed's IRC listener
            base="$RESULTS/$sc-$srv-$rep"
            log "run $run_no/$total: $sc $srv rep $rep (port $port)"
            if ! start_server "$srv" "$port" "$port2" "$base.server.log"; then
                echo "{\"failed\": \"server did not start\"}" >"$base.json"
                continue
            fi
            pids=("${SERVER_PIDS[@]}")
            # shellcheck disable=SC2207
            args=($(scenario_args "$sc"))
            # shellcheck disable=SC2207
            pargs=($(bench_proto_args "$srv" "$port" "$port2"))
            # shellcheck disable=SC2207
            aargs=($(bench_addr_args "$srv" "$port"))
            bench=("$BENCH_BIN" "${aargs[@]}" "${pargs[@]}" "${args[@]}"
                --msg-size "$MSG_SIZE" --duration "$DURATION" --server-pid "$(IFS=,; echo "${pids[*]}")" --json)
            echo "$sc $srv rep $rep: $(server_cmd "$srv" "$port" "$port2")" >>"$RESULTS/commands.txt"
            echo "$sc $srv rep $rep: ${bench[*]}" >>"$RESULTS/commands.txt"
            # Bounded: duration + warmup/drain/setup allowance.
            limit=$(awk -v d="$DURATION" 'BEGIN { printf "%d", d + 240 }')
            rc=0
            timeout --kill-after=10 "$limit" "${bench[@]}" >"$base.json" 2>"$base.err" || rc=$?
            if ((rc != 0)); then
                log "bench failed (exit $rc): $(tail -n 3 "$base.err" | tr '\n' ' ')"
                python3 -c 'import json,sys; print(json.dumps({"failed": sys.argv[1]}))' \
                    "exit $rc: $(tail -n 3 "$base.err")" >"$base.json"
            fi
            for pid in "${pids[@]}"; do
                if ! kill -0 "$pid" 2>/dev/null; then
                    log "warning: $srv (pid $pid) was no longer running after the bench"
                fi
            done
            stop_server
            [[ $srv == linechat-mixed ]] && port=$port2
            [[ $srv == linechat-cluster* ]] && port=$((port + 3))
            sleep 1
        done
    done
done

# --- report ---------------------------------------------------------------------------------
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
[[ -n $cpu_model ]] || cpu_model=$(uname -m)
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "unknown")
if [[ $commit != unknown ]] && [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]]; then
    commit="$commit (with uncommitted changes)"
fi
versions=""
for srv in $SERVERS; do
    v=$(server_version "$srv" || true)
    versions+="$srv=${v:-unknown};"
done
: >"$RESULTS/meta.tsv"
for sc in $SCENARIOS; do
    for srv in $SERVERS; do
        printf '%s\t%s\t%s\t%s\t%s\n' "$sc" "$(scenario_title "$sc")" "$srv" \
            "$(server_cmd "$srv" PORT IRCPORT)" \
            "linechat-bench $(bench_addr_args "$srv" PORT) $(bench_proto_args "$srv" PORT IRCPORT) $(scenario_args "$sc") --msg-size $MSG_SIZE --duration $DURATION --server-pid $(pid_args "$srv") --json" \
            >>"$RESULTS/meta.tsv"
    done
done
# Keep the generated peer configurations with the results (the temporary directory goes).
for f in "$CONF_DIR"/*/*.conf; do
    [[ -e $f ]] || continue
    cp "$f" "$RESULTS/$(basename "$(dirname "$f")").conf"
done

export R_SCENARIOS="$SCENARIOS" R_SERVERS="$SERVERS" R_REPS="$REPS" R_DURATION="$DURATION"
export R_TLS_KEY="$TLS_KEY" R_VERSIONS="$versions" R_COMMIT="$commit" R_CPU="$cpu_model" R_ROOT="$ROOT" R_CONF_DIR="$CONF_DIR"
R_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
R_NPROC=$(nproc)
R_MEM=$(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)
R_KERNEL=$(uname -srm)
export R_DATE R_NPROC R_MEM R_KERNEL
mkdir -p "$(dirname "$OUT")"
python3 - "$RESULTS" "$OUT" <<'PY'
import json, os, statistics, sys

results, out = sys.argv[1], sys.argv[2]
E = os.environ
scenarios = E["R_SCENARIOS"].split()
servers = E["R_SERVERS"].split()
reps = int(E["R_REPS"])
duration = E["R_DURATION"]
meta = {}
with open(os.path.join(results, "meta.tsv")) as f:
    for row in f:
        sc, title, srv, server_cmd, bench_cmd = row.rstrip("\n").split("\t")
        m = meta.setdefault(sc, dict(title=title, cmds={}, bench={}))
        m["cmds"][srv] = server_cmd.replace(E["R_CONF_DIR"] + "/", "$TMP/")
        m["bench"][srv] = bench_cmd
base = servers[0]
default_servers = servers == ["linechat", "redis", "nats"]
irc_servers = [s for s in servers if s in ("linechat-irc", "ngircd", "inspircd", "linechat-mixed")]
LABEL = {"linechat": "linechat", "redis": "Redis pub/sub", "nats": "NATS",
         "linechat-irc": "linechat's IRC listener", "ngircd": "ngIRCd", "inspircd": "InspIRCd",
         "linechat-mixed": "linechat with half its clients on IRC",
         "linechat-before": "linechat before the change (BEFORE_BIN)",
         "linechat-store": "linechat with --data-dir",
         "linechat-fsync": "linechat with --data-dir --fsync-interval always",
         "linechat-tls": "linechat's line protocol over TLS", "linechat-ircs": "linechat's IRC over TLS",
         "linechat-ws-line": "linechat, line protocol over WebSocket",
         "linechat-ws-irc": "linechat, IRC over WebSocket",
         "linechat-cluster": "three linechat nodes over NATS JetStream",
         "linechat-cluster-before": "the same cluster of BEFORE_BIN nodes"}
cluster = any(s.startswith("linechat-cluster") for s in servers)
versions = dict(p.split("=", 1) for p in E["R_VERSIONS"].split(";") if p)

def load(sc, srv):
    runs = []
    for rep in range(1, reps + 1):
        path = os.path.join(results, f"{sc}-{srv}-{rep}.json")
        try:
            with open(path) as f:
                runs.append(json.load(f))
        except (OSError, ValueError) as e:
            runs.append({"failed": f"no result ({e})"})
    return runs

def get(d, path):
    for k in path.split("."):
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d

def med(runs, path):
    vals = [get(r, path) for r in runs if "failed" not in r]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None

def tot(runs, path):
    vals = [get(r, path) for r in runs if "failed" not in r]
    vals = [v for v in vals if v is not None]
    return sum(vals) if vals else None

def num(v, unit="", digits=0):
    if v is None:
        return "n/a"
    if abs(v) >= 1e6:
        s = f"{v / 1e6:.2f}M"
    elif abs(v) >= 1e4:
        s = f"{v / 1e3:.1f}k"
    else:
        s = f"{v:.{digits}f}"
    return s + unit

def bytes_(v):
    return "n/a" if v is None else f"{v:,.0f} B"

def us(v):
    if v is None:
        return "n/a"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"

def mib(kib):
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"

def ratio(a, b):
    if a is None or b is None or a == 0 or b == 0:
        return "n/a"
    return f"{a / b:.2f}×"

L = []
w = L.append
w("# linechat benchmarks")
w("")
if default_servers:
    w("Produced by `bench/compare.sh`: linechat against Redis pub/sub and NATS, each a fresh server on a")
    w("loopback port, driven by `linechat-bench` with the same workload. Medians over the repetitions.")
else:
    labels = [LABEL[s] for s in servers]
    w(f"Produced by `bench/compare.sh`: {labels[0]} against {', '.join(labels[1:]) or 'nothing else'}, each a fresh")
    w("server on a loopback port, driven by `linechat-bench` with the same workload. Medians over the repetitions.")
w("")
w("## Machine and run")
w("")
w(f"- Date: {E['R_DATE']}")
w(f"- Git commit: {E['R_COMMIT']}")
w(f"- Machine: {E['R_NPROC']} cores, {E['R_CPU']}, {E['R_MEM']}")
w(f"- Kernel: {E['R_KERNEL']}")
w(f"- Servers: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
w(f"- Repetitions: {reps} per scenario and server, interleaved ({', '.join(servers)}, {', '.join(servers)}, …); {duration} s measured per run after 1 s warmup; 64-byte payloads")
what = "Raw results and exact per-run command lines" if default_servers else "Raw results, generated server configurations and exact per-run command lines"
w(f"- {what}: `{os.path.relpath(results, E['R_ROOT'])}`")
w("")
w("### How to read it")
w("")
if any(s in servers for s in ("linechat", "redis", "nats")):
    w("- **Expected deliveries**: each message should reach every other connected client, N-1 per message, for")
    w("  all three servers. linechat relays to all other clients and does not echo; NATS clients subscribe to one")
    w("  subject and publish on the same connection with `echo:false`; Redis subscribers cannot publish, so each")
    w("  sender publishes on a separate connection and its own subscriber's copy is discarded (so Redis does N")
    w("  deliveries per message, one more than the others).")
if irc_servers:
    w("- **IRC**: every client registers (NICK/USER), JOINs `#lobby` and sends `PRIVMSG #lobby`; IRC servers do")
    w("  not echo a PRIVMSG to its sender, so N-1 deliveries per message. Senders are operators on ngIRCd (user")
    w("  mode +F: no command throttling) and InspIRCd (an oper class with no-throttle, no-fakelag and")
    w("  increased-buffers); what the peers cannot turn off is listed under \"IRC peers\" below.")
if any(s in servers for s in ("linechat-tls", "linechat-ircs")):
    w(f"- **linechat-tls**, **linechat-ircs**: the same server on `line+tls://` or `ircs://` with a certificate")
    w(f"  made for the run ({E.get('R_TLS_KEY', 'ec')}); the bench does not verify it and never resumes a")
    w("  session, so every connection is a full handshake.")
if "S5" in scenarios:
    w("- **S5 churn**: 32 connections at a time, each opened (with TLS: a full handshake), shown the nickname")
    w("  prompt and closed, for the measured seconds. **conn/CPU-s** is connections per second of server CPU")
    w("  time: with TLS, full handshakes per core (the server runs on one thread).")
if any(s.startswith("linechat-ws-") for s in servers):
    w("- **linechat-ws-line / linechat-ws-irc**: the same chat over WebSocket to linechat's http:// listener: the")
    w("  line protocol (no subprotocol) or IRC (`text.ircv3.net`), one masked text message per line, as a browser")
    w("  sends them; N-1 deliveries per message.")
if cluster:
    w("- **linechat-cluster**: `nats-server -js` and three linechat nodes (a, b, c) with `--cluster`; client i")
    w("  connects to node i mod 3, so every room has people and senders on all three nodes. Deliveries are")
    w("  counted as on one server (each message to every other client, N-1), and **deliv/CPU-s** divides")
    w("  them by the CPU of all four processes: the three nodes and the broker. **x-node p99** is the")
    w("  latency of the deliveries whose sender is on another node than the receiver (they crossed the")
    w("  broker); the bench knows each client's node. The bars (issue 16): zero loss, x-node p99 under")
    w("  5 ms in S1, and deliv/CPU-s at least 0.6× one node's.")
if "linechat-mixed" in servers:
    w("- **linechat-mixed**: one linechat server, one room; even clients use the line protocol (as netcat does),")
    w("  odd ones IRC, so half the senders and half the receivers are on each side.")
w("- **deliveries/s**: deliveries of messages sent in the measured interval, per second.")
w("- **deliv/CPU-s**: those deliveries per second of server CPU time (utime+stime from /proc) in the")
w("  measured interval: efficiency, independent of how much CPU the bench took.")
w("- **latency**: one-way, send time to receipt, all clients in one process on one clock.")
w("- **lost/dup/reord**: summed over all repetitions, from per-sender sequence numbers tracked by every receiver.")
w("- **S2** is closed-loop: each sender keeps at most 64 messages in flight, where in flight means not yet")
w("  received by every receiver, so it measures sustained throughput without unbounded queueing.")
w("- This machine has few cores and the bench shares them with the server: absolute numbers are lower")
w("  bounds; compare the ratios, and see the warnings below each table.")
w("")

for sc in scenarios:
    m = meta[sc]
    w(f"## {m['title']}")
    w("")
    extra = ", IRCPORT the next one (linechat-mixed's IRC listener)" if "linechat-mixed" in servers else ""
    tmp = ", $TMP the run's temporary directory of generated configurations" if any(s in servers for s in ("ngircd", "inspircd")) else ""
    w(f"Commands (PORT is a fresh loopback port per run, PID the server's PID{extra}{tmp}):")
    w("")
    w("```")
    for srv in servers:
        w(m["cmds"][srv])
    for srv in servers:
        w(m["bench"][srv])
    w("```")
    w("")
    data = {srv: load(sc, srv) for srv in servers}
    ok = {srv: sum(1 for r in data[srv] if "failed" not in r) for srv in servers}
    if sc == "S5":
        w("| server | runs ok | connections/s | conn/CPU-s | server CPU | setup p50 | setup p99 | failed |")
        w("|---|---|---|---|---|---|---|---|")
        for srv in servers:
            r = data[srv]
            w(f"| {srv} | {ok[srv]}/{reps} | {num(med(r, 'connections_per_sec'))} | "
              f"{num(med(r, 'connections_per_server_cpu_s'))} | {num(med(r, 'server_cpu_s'), ' s', 2)} | "
              f"{us(med(r, 'setup_us_p50'))} | {us(med(r, 'setup_us_p99'))} | {num(tot(r, 'connections_failed'))} |")
        metrics = [("connections/s", "connections_per_sec", True),
                   ("connections per CPU-s", "connections_per_server_cpu_s", True)]
    elif sc == "S4":
        w("| server | runs ok | server RSS / connection | RSS before → after join | peak RSS (VmHWM) | setup (connect+join) |")
        w("|---|---|---|---|---|---|")
        for srv in servers:
            r = data[srv]
            w(f"| {srv} | {ok[srv]}/{reps} | {bytes_(med(r, 'server.rss_bytes_per_conn'))} | "
              f"{mib(med(r, 'server.rss_kib_before'))} → {mib(med(r, 'server.rss_kib_after_join'))} | "
              f"{mib(med(r, 'server.vm_hwm_kib'))} | {num(med(r, 'setup_s'), ' s', 2)} |")
        metrics = [("RSS / connection", "server.rss_bytes_per_conn", False),
                   ("peak RSS", "server.vm_hwm_kib", False)]
    else:
        xh, xs = (" x-node p99 |", "---|") if cluster else ("", "")
        w(f"| server | runs ok | deliveries/s | deliv/CPU-s | server CPU | p50 | p99 | p99.9 |{xh} lost/dup/reord | peak RSS | sent/s |")
        w(f"|---|---|---|---|---|---|---|---|{xs}---|---|---|")
        for srv in servers:
            r = data[srv]
            cpu = med(r, "server.cpu_util")
            ldr = "/".join(num(tot(r, k)) for k in ("lost", "duplicated", "reordered"))
            xv = f" {us(med(r, 'cross_node.latency_us.p99'))} |" if cluster else ""
            w(f"| {srv} | {ok[srv]}/{reps} | {num(med(r, 'deliveries_per_s'))} | {num(med(r, 'server.deliveries_per_cpu_s'))} | "
              f"{'n/a' if cpu is None else f'{cpu * 100:.0f}%'} | {us(med(r, 'latency_us.p50'))} | {us(med(r, 'latency_us.p99'))} | "
              f"{us(med(r, 'latency_us.p999'))} |{xv} {ldr} | {mib(med(r, 'server.vm_hwm_kib'))} | {num(med(r, 'sent_per_s'))} |")
        for cs in [s for s in servers if s.startswith("linechat-cluster")]:
            if "linechat" not in servers or sc not in ("S1", "S2", "S3"):
                break
            cl, one = data[cs], data["linechat"]
            a, b = med(cl, "server.deliveries_per_cpu_s"), med(one, "server.deliveries_per_cpu_s")
            x99 = med(cl, "cross_node.latency_us.p99")
            failed = sum(1 for r in cl if "failed" in r)
            lost = sum((tot(cl, k) or 0) for k in ("lost", "duplicated", "reordered"))
            expected = tot(cl, "expected_deliveries") or 0
            got = tot(cl, "deliveries") or 0
            w("")
            w(f"{cs} against one node (issue 16's bars): deliveries per CPU-second {num(a)} vs {num(b)}, "
              f"**{'n/a' if not (a and b) else f'{a / b:.3f}×'}** (bar ≥ 0.6×: {'met' if a and b and a / b >= 0.6 else 'NOT met'}); "
              f"{got:,} of {expected:,} expected deliveries counted over {reps - failed} runs, "
              f"lost/duplicated/reordered {lost} (bar 0: {'met' if lost == 0 and got == expected and failed == 0 else 'NOT met'})"
              + (f"; cross-node p99 {us(x99)} (bar < 5 ms: {'met' if x99 is not None and x99 < 5000 else 'NOT met'})" if sc == "S1" else
                 f"; cross-node p99 {us(x99)}") + ".")
        metrics = [("deliveries/s", "deliveries_per_s", True),
                   ("deliveries per CPU-s", "server.deliveries_per_cpu_s", True),
                   ("p99 latency", "latency_us.p99", False),
                   ("peak RSS", "server.vm_hwm_kib", False)]
    w("")
    others = [s for s in servers if s != base]
    if others:
        w(f"Ratios, {base} ÷ other (medians):")
        w("")
        w("| metric | better | " + " | ".join(f"{base} vs {o}" for o in others) + " |")
        w("|---|---|" + "---|" * len(others))
        for name, key, hb in metrics:
            lc = med(data[base], key)
            w(f"| {name} | {'higher' if hb else 'lower'} | " + " | ".join(ratio(lc, med(data[o], key)) for o in others) + " |")
        w("")
    notes = []
    for srv in servers:
        for i, r in enumerate(data[srv], 1):
            if "failed" in r:
                notes.append(f"{srv} rep {i}: FAILED: {r['failed']}")
            for wmsg in r.get("warnings", []) or []:
                notes.append(f"{srv} rep {i}: {wmsg}")
    if notes:
        w("Warnings:")
        w("")
        for n in notes:
            w(f"- {n}")
        w("")


if "ngircd" in servers or "inspircd" in servers:
    w("## IRC peers: what could not be turned off")
    w("")
    w("Each is configured as generously as it allows (the generated files are in the results directory).")
    w("")
    if "ngircd" in servers:
        w("- **ngIRCd**: `MaxPenaltyTime = 0` (no penalty time below 10 s), `MaxConnectionsIP = 0`,")
        w("  `MaxConnections = 0`, DNS, ident and PAM off; senders OPER and set user mode +F. Compiled in and")
        w("  not configurable: a user's write buffer of 32 KiB (a client whose unsent output would pass it is")
        w("  disconnected, \"Write buffer space exhausted\"), a read buffer of 2 KiB per connection, and at most")
        w("  10 commands per connection per main-loop pass for +F users (3 for others; the penalty that")
        w("  would follow is 0 s with MaxPenaltyTime = 0), and a listen backlog of 10 with one accept per")
        w("  loop pass (so the bench connects 8 at a time to it). One thread.")
    if "inspircd" in servers:
        w("- **InspIRCd**: one connect class with `commandrate` and `threshold` at 10^9, `fakelag=\"no\"`,")
        w("  `localmax`/`globalmax`/`limit` 100000, `hardsendq`/`softsendq` 64 MiB, `recvq` 16 MiB, no DNS or")
        w("  ident; senders OPER into a class with `users/flood/no-throttle`, `no-fakelag` and")
        w("  `increased-buffers`. Not configurable away: the per-user penalty accounting itself (it runs, with")
        w("  limits too high to reach), sendq limits as such (set high, not off), and a single thread.")
    w("")
with open(out, "w") as f:
    f.write("\n".join(L).rstrip() + "\n")
print(f"wrote {out}", file=sys.stderr)
PY
if [[ $RECORD == 1 ]]; then
    log "results in $RESULTS; report written to $OUT"
else
    cat "$OUT"
    log "results in $RESULTS; report in $OUT (RECORD=1 writes BENCHMARKS.md)"
fi
