#!/usr/bin/env bash
# bench/compare.sh: linechat vs Redis pub/sub vs NATS, on loopback, same workload, same machine.
#
# For every scenario and repetition it starts a FRESH server of each kind (interleaved:
# linechat, redis, nats, linechat, redis, nats, ...), runs linechat-bench against it with
# --server-pid and --json, stops exactly that server by its PID, and at the end writes the
# medians over the repetitions to BENCHMARKS.md at the repository root.
#
# Usage: bench/compare.sh            (all scenarios, 3 repetitions, 10 s each)
# Environment overrides:
#   SCENARIOS="S1 S2"   which scenarios (S1 room, S2 saturate, S3 crowd, S4 idle)
#   REPS=1              repetitions per scenario and server
#   DURATION=3          measured seconds per run
#   SERVERS="linechat redis nats"   which servers
#   OUT=path            report file (default <repo>/BENCHMARKS.md)
#   RESULTS=dir         where the JSON of every run goes (default target/bench-results/<time>)
#   BASE_PORT=17000     first loopback port used (one new port per run)
#   SKIP_BUILD=1        do not run cargo build --release
#   LINECHAT_BIN=...  BENCH_BIN=...   binaries (default target/release/linechat[-bench])
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCENARIOS=${SCENARIOS:-"S1 S2 S3 S4"}
SERVERS=${SERVERS:-"linechat redis nats"}
REPS=${REPS:-3}
DURATION=${DURATION:-10}
OUT=${OUT:-$ROOT/BENCHMARKS.md}
RESULTS=${RESULTS:-$ROOT/target/bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
BASE_PORT=${BASE_PORT:-17000}
SKIP_BUILD=${SKIP_BUILD:-0}
LINECHAT_BIN=${LINECHAT_BIN:-$ROOT/target/release/linechat}
BENCH_BIN=${BENCH_BIN:-$ROOT/target/release/linechat-bench}
MSG_SIZE=64
export PATH="$PATH:/usr/sbin:/sbin"

die() { echo "compare.sh: $*" >&2; exit 1; }
log() { echo "[compare $(date -u +%H:%M:%S)] $*" >&2; }

[[ $REPS =~ ^[1-9][0-9]*$ ]] || die "REPS must be a positive integer"
[[ $DURATION =~ ^[0-9]+([.][0-9]+)?$ ]] || die "DURATION must be a number of seconds"
awk -v d="$DURATION" 'BEGIN { exit !(d > 0 && d <= 600) }' || die "DURATION must be in (0, 600]"
for s in $SCENARIOS; do
    case $s in S1 | S2 | S3 | S4) ;; *) die "unknown scenario $s (use S1 S2 S3 S4)" ;; esac
done
for s in $SERVERS; do
    case $s in linechat | redis | nats) ;; *) die "unknown server $s (use linechat redis nats)" ;; esac
done

# --- cleanup: stop only the server this script started, by its PID ---------------------------
SERVER_PID=""
stop_server() {
    local pid=$SERVER_PID
    SERVER_PID=""
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
trap 'stop_server' EXIT
trap 'log "interrupted"; exit 130' INT TERM

# --- tools ------------------------------------------------------------------------------------
need_redis=0
need_nats=0
[[ " $SERVERS " == *" redis "* ]] && ! command -v redis-server >/dev/null && need_redis=1
[[ " $SERVERS " == *" nats "* ]] && ! command -v nats-server >/dev/null && need_nats=1
if ((need_redis || need_nats)); then
    pkgs=()
    ((need_redis)) && pkgs+=(redis-server)
    ((need_nats)) && pkgs+=(nats-server)
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    log "installing ${pkgs[*]} with apt-get"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi
command -v python3 >/dev/null || die "python3 is needed to write the report"

if [[ $SKIP_BUILD != 1 ]]; then
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
fi
[[ -x $BENCH_BIN ]] || die "no bench binary at $BENCH_BIN"
if [[ " $SERVERS " == *" linechat "* ]]; then
    [[ -x $LINECHAT_BIN ]] || die "no linechat binary at $LINECHAT_BIN"
fi

# Thousands of sockets: raise the open-file limit for the servers we start (and the bench).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (($(ulimit -n) < 20100)) && [[ " $SCENARIOS " == *" S4 "* ]]; then
    log "warning: open-file limit $(ulimit -n) may be too low for S4 (10000 clients)"
fi

mkdir -p "$RESULTS"
: >"$RESULTS/commands.txt"

# --- scenarios ------------------------------------------------------------------------------
scenario_title() {
    case $1 in
    S1) echo "S1 room: 100 clients, 10 senders, 2000 msgs/s total" ;;
    S2) echo "S2 saturate: 100 clients, 10 senders, as fast as the window allows" ;;
    S3) echo "S3 crowd: 2000 clients, 20 senders, 200 msgs/s total" ;;
    S4) echo "S4 idle: 10000 connected idle clients" ;;
    esac
}
scenario_args() {
    case $1 in
    S1) echo "--clients 100 --senders 10 --rate 2000" ;;
    S2) echo "--clients 100 --senders 10 --rate 0" ;;
    S3) echo "--clients 2000 --senders 20 --rate 200 --connect-timeout 30 --settle-max 30" ;;
    S4) echo "--clients 10000 --senders 0 --connect-timeout 60 --settle-max 60" ;;
    esac
}

port_listening() { # is 127.0.0.1:$1 in LISTEN state?
    local hex
    hex=$(printf '%04X' "$1")
    grep -qi "^ *[0-9]*: 0100007F:$hex 00000000:0000 0A" /proc/net/tcp
}

server_cmd() { # $1 server, $2 port -> prints the command line
    case $1 in
    linechat) echo "$LINECHAT_BIN --rate-limit 0 --listen 127.0.0.1:$2 --max-clients 20000" ;;
    # maxclients: Redis' default of 10000 would refuse part of S4.
    redis) echo "redis-server --port $2 --bind 127.0.0.1 --save '' --appendonly no --maxclients 20000" ;;
    nats) echo "nats-server -a 127.0.0.1 -p $2" ;;
    esac
}

start_server() { # $1 server, $2 port, $3 log file; sets SERVER_PID
    case $1 in
    linechat) "$LINECHAT_BIN" --rate-limit 0 --listen "127.0.0.1:$2" --max-clients 20000 >"$3" 2>&1 &
        ;;
    redis) redis-server --port "$2" --bind 127.0.0.1 --save '' --appendonly no --maxclients 20000 >"$3" 2>&1 &
        ;;
    nats) nats-server -a 127.0.0.1 -p "$2" >"$3" 2>&1 & ;;
    esac
    SERVER_PID=$!
    for _ in $(seq 100); do
        port_listening "$2" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    log "$1 did not start listening on 127.0.0.1:$2; its log:"
    tail -n 20 "$3" >&2 || true
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
            base="$RESULTS/$sc-$srv-$rep"
            log "run $run_no/$total: $sc $srv rep $rep (port $port)"
            if ! start_server "$srv" "$port" "$base.server.log"; then
                echo "{\"failed\": \"server did not start\"}" >"$base.json"
                continue
            fi
            pid=$SERVER_PID
            # shellcheck disable=SC2207
            args=($(scenario_args "$sc"))
            bench=("$BENCH_BIN" --addr "127.0.0.1:$port" --proto "$srv" "${args[@]}"
                --msg-size "$MSG_SIZE" --duration "$DURATION" --server-pid "$pid" --json)
            echo "$sc $srv rep $rep: $(server_cmd "$srv" "$port")" >>"$RESULTS/commands.txt"
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
            if ! kill -0 "$pid" 2>/dev/null; then
                log "warning: $srv (pid $pid) was no longer running after the bench"
            fi
            stop_server
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
    case $srv in
    linechat) v=$("$LINECHAT_BIN" --version 2>/dev/null | head -n1 || true) ;;
    redis) v=$(redis-server --version 2>/dev/null | head -n1 || true) ;;
    nats) v=$(nats-server --version 2>/dev/null | head -n1 || true) ;;
    esac
    versions+="$srv=${v:-unknown};"
done
scen_meta=""
for sc in $SCENARIOS; do
    scen_meta+="$sc|$(scenario_title "$sc")|$(scenario_args "$sc")|$(server_cmd linechat PORT)|$(server_cmd redis PORT)|$(server_cmd nats PORT);"
done

export R_SCENARIOS="$SCENARIOS" R_SERVERS="$SERVERS" R_REPS="$REPS" R_DURATION="$DURATION"
export R_META="$scen_meta" R_VERSIONS="$versions" R_COMMIT="$commit" R_CPU="$cpu_model"
R_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
R_NPROC=$(nproc)
R_MEM=$(awk '/MemTotal/ { printf "%.1f GiB RAM", $2 / 1048576 }' /proc/meminfo)
R_KERNEL=$(uname -srm)
export R_DATE R_NPROC R_MEM R_KERNEL
python3 - "$RESULTS" "$OUT" <<'PY'
import json, os, statistics, sys

results, out = sys.argv[1], sys.argv[2]
E = os.environ
scenarios = E["R_SCENARIOS"].split()
servers = E["R_SERVERS"].split()
reps = int(E["R_REPS"])
duration = E["R_DURATION"]
meta = {}
for part in E["R_META"].split(";"):
    if part:
        sc, title, args, lc, rd, nt = part.split("|")
        meta[sc] = dict(title=title, args=args, cmds=dict(linechat=lc, redis=rd, nats=nt))
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
w("Produced by `bench/compare.sh`: linechat against Redis pub/sub and NATS, each a fresh server on a")
w("loopback port, driven by `linechat-bench` with the same workload. Medians over the repetitions.")
w("")
w("## Machine and run")
w("")
w(f"- Date: {E['R_DATE']}")
w(f"- Git commit: {E['R_COMMIT']}")
w(f"- Machine: {E['R_NPROC']} cores, {E['R_CPU']}, {E['R_MEM']}")
w(f"- Kernel: {E['R_KERNEL']}")
w(f"- Servers: " + "; ".join(f"{k}: {v}" for k, v in versions.items()))
w(f"- Repetitions: {reps} per scenario and server, interleaved ({', '.join(servers)}, {', '.join(servers)}, …); {duration} s measured per run after 1 s warmup; 64-byte payloads")
w(f"- Raw results and exact per-run command lines: `{os.path.relpath(results, os.path.dirname(os.path.abspath(out)))}`")
w("")
w("### How to read it")
w("")
w("- **Expected deliveries**: each message should reach every other connected client, N-1 per message, for")
w("  all three servers. linechat relays to all other clients and does not echo; NATS clients subscribe to one")
w("  subject and publish on the same connection with `echo:false`; Redis subscribers cannot publish, so each")
w("  sender publishes on a separate connection and its own subscriber's copy is discarded (so Redis does N")
w("  deliveries per message, one more than the others).")
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
    w("Commands (PORT is a fresh loopback port per run, PID the server's PID):")
    w("")
    w("```")
    for srv in servers:
        w(m["cmds"][srv])
    for srv in servers:
        w(f"linechat-bench --addr 127.0.0.1:PORT --proto {srv} {m['args']} --msg-size 64 --duration {duration} --server-pid PID --json")
    w("```")
    w("")
    data = {srv: load(sc, srv) for srv in servers}
    ok = {srv: sum(1 for r in data[srv] if "failed" not in r) for srv in servers}
    if sc == "S4":
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
        w("| server | runs ok | deliveries/s | deliv/CPU-s | server CPU | p50 | p99 | p99.9 | lost/dup/reord | peak RSS | sent/s |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for srv in servers:
            r = data[srv]
            cpu = med(r, "server.cpu_util")
            ldr = "/".join(num(tot(r, k)) for k in ("lost", "duplicated", "reordered"))
            w(f"| {srv} | {ok[srv]}/{reps} | {num(med(r, 'deliveries_per_s'))} | {num(med(r, 'server.deliveries_per_cpu_s'))} | "
              f"{'n/a' if cpu is None else f'{cpu * 100:.0f}%'} | {us(med(r, 'latency_us.p50'))} | {us(med(r, 'latency_us.p99'))} | "
              f"{us(med(r, 'latency_us.p999'))} | {ldr} | {mib(med(r, 'server.vm_hwm_kib'))} | {num(med(r, 'sent_per_s'))} |")
        metrics = [("deliveries/s", "deliveries_per_s", True),
                   ("deliveries per CPU-s", "server.deliveries_per_cpu_s", True),
                   ("p99 latency", "latency_us.p99", False),
                   ("peak RSS", "server.vm_hwm_kib", False)]
    w("")
    others = [s for s in servers if s != "linechat"]
    if "linechat" in servers and others:
        w("Ratios, linechat ÷ other (medians):")
        w("")
        w("| metric | better | " + " | ".join(f"linechat vs {o}" for o in others) + " |")
        w("|---|---|" + "---|" * len(others))
        for name, key, hb in metrics:
            lc = med(data["linechat"], key)
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

with open(out, "w") as f:
    f.write("\n".join(L).rstrip() + "\n")
print(f"wrote {out}", file=sys.stderr)
PY
log "results in $RESULTS; report in $OUT"
