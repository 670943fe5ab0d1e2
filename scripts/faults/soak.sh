#!/usr/bin/env bash
# The long soak: by default 10 minutes, 2000 client slots each sending a line every 20 s
# (~100 lines/s, each delivered to ~2000 clients), joining and leaving throughout. Samples RSS,
# descriptors and an /echo round trip every 2 s; fails on any lost line, on RSS growth beyond
# 25 % + 4 MiB over the first third's peak, or on descriptor growth.
#   SOAK_SECS=600 SOAK_CLIENTS=2000 SOAK_INTERVAL_MS=20000 scripts/faults/soak.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export SOAK_SECS="${SOAK_SECS:-600}" SOAK_CLIENTS="${SOAK_CLIENTS:-2000}"
export SOAK_INTERVAL_MS="${SOAK_INTERVAL_MS:-20000}"
# Every client slot is a descriptor in this process and in the server.
ulimit -n "$(ulimit -Hn)"
log="$(mktemp -t linechat-soak.XXXXXX)"
echo "soak: ${SOAK_CLIENTS} clients for ${SOAK_SECS} s; log in $log"
if cargo test --release --test faults soak -- --nocapture 2>&1 | tee "$log" | grep -E '^ +[0-9]+ |soak'; then :; fi
if grep -q "test result: ok" "$log"; then
  echo "VERDICT: PASS"
else
  grep -E "panicked|assert" "$log" | head -5 || true
  echo "VERDICT: FAIL"
  exit 1
fi
