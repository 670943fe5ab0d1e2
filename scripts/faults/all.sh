#!/usr/bin/env bash
# Runs the whole fault suite once, in release mode and one test at a time so the figures are
# not disturbed by each other, printing every test's figures and a verdict. Needs root for the
# network-namespace tests (lossy link, vanished peers); scripts/test-deps.sh installs ip and nft.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/test-deps.sh
ulimit -n "$(ulimit -Hn)"
log="$(mktemp -t linechat-faults.XXXXXX)"
cargo test --release --test faults -- --nocapture --test-threads=1 2>&1 | tee "$log" \
  | grep -E "^(test |SKIPPED|storm|soak|lossy|shutdown|slow|idle|busy|silent|100 MB| +[0-9]+ )|: Packet Loss" || true
if grep -q "test result: ok" "$log"; then echo "VERDICT: PASS"; else echo "VERDICT: FAIL (log: $log)"; exit 1; fi
