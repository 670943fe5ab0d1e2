#!/usr/bin/env bash
# Fuzzes the line decoder, the command parser, the IRC message parser and the WebSocket frame
# header parser for FUZZ_SECS seconds each (default 60).
# cargo-fuzz wants a nightly compiler for its sanitizer flags; on a stable toolchain
# RUSTC_BOOTSTRAP=1 unlocks them (no other toolchain is needed). Findings land in
# fuzz/artifacts/<target>/ and must become regression tests (tests/it/props.rs, codec tests,
# or the tests in src/proto/irc/message.rs).
set -euo pipefail
cd "$(dirname "$0")/../../fuzz"
secs="${FUZZ_SECS:-60}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz from crates.io" >&2
  cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
status=PASS
for target in line_decoder command_parser irc_message ws_frame; do
  echo "fuzz: $target for ${secs} s"
  if out=$(cargo fuzz run "$target" -O -- -max_total_time="$secs" 2>&1); then
    echo "$out" | grep -E "^Done [0-9]+ runs" | sed "s/^/fuzz: $target: /"
  else
    echo "$out" | tail -30
    echo "fuzz: $target FAILED; the input is in fuzz/artifacts/$target/"
    status=FAIL
  fi
done
echo "VERDICT: $status"
[ "$status" = PASS ]
