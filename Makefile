# For people used to the original server's `make run`. Cargo does the work.

.PHONY: run test release bench bench-record bench-irc bench-tls bench-cluster check faults fuzz soak irctest

run:
	cargo run --release

# Installs what the tests need (netcat, promtool, ip, nft, irssi, tmux, WeeChat), then runs
# every test.
test:
	scripts/test-deps.sh
	cargo test

# The release binaries the benchmarks run: the server and linechat-bench.
release:
	cargo build --release --bins

# linechat against redis-server and nats-server, side by side; prints the report and keeps it
# under target/bench-results/ (BENCHMARKS.md is left alone).
# Quick look: make bench SCENARIOS="S1 S2" REPS=1 DURATION=3
bench: release
	SKIP_BUILD=1 bench/compare.sh

# The same, and writes the report to BENCHMARKS.md (what a recorded comparison is).
bench-record: release
	RECORD=1 SKIP_BUILD=1 bench/compare.sh

# IRC: linechat's IRC listener against ngIRCd and InspIRCd, and a mixed line/IRC room.
# Needs a linechat with --listen irc://. Prints the report; add RECORD=1 to write BENCHMARKS.md.
bench-irc: release
	SERVERS="$${SERVERS:-linechat-irc ngircd inspircd linechat-mixed}" \
	SCENARIOS="$${SCENARIOS:-S1 S2 S3}" SKIP_BUILD=1 bench/compare.sh

# TLS against plaintext, interleaved in one run: S1 and S3 deliveries per server CPU-second,
# and S5, new connections per second and per server CPU-second (with TLS: full handshakes).
bench-tls: release
	SERVERS="$${SERVERS:-linechat-tls linechat}" SCENARIOS="$${SCENARIOS:-S1 S3 S5}" \
	SKIP_BUILD=1 bench/compare.sh

# The cluster (issue 16) against one node, interleaved in one run: nats-server -js and three
# linechat nodes with the clients spread over them, S1 and S3; deliveries per CPU-second of
# all four processes against one node's, loss, and the latency of the cross-node deliveries.
bench-cluster: release
	SERVERS="$${SERVERS:-linechat-cluster linechat}" SCENARIOS="$${SCENARIOS:-S1 S3}" \
	SKIP_BUILD=1 bench/compare.sh

# What CI runs.
check:
	.ci/run

# The fault suite in release mode, one test at a time, with its figures and a verdict
# (root for the network-namespace tests). See TESTING.md.
faults:
	scripts/faults/all.sh

# Each fuzz target for FUZZ_SECS seconds (default 60).
fuzz:
	scripts/faults/fuzz.sh

# The long soak (default 10 min, 2000 clients).
soak:
	scripts/faults/soak.sh

# The irctest IRC conformance subset against linechat's IRC listener (IRCTEST_SERVER=ngircd for
# the baseline). See TESTING.md.
irctest:
	scripts/irctest.sh
