# For people used to the original server's `make run`. Cargo does the work.

.PHONY: run test bench check faults fuzz soak irctest

run:
	cargo run --release

# Installs what the tests need (netcat, promtool), then runs every test.
test:
	scripts/test-deps.sh
	cargo test

# linechat against redis-server and nats-server, side by side; writes BENCHMARKS.md.
# Quick look: make bench SCENARIOS="S1 S2" REPS=1 DURATION=3
bench:
	bench/compare.sh

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
# the baseline). See docs/irctest-notes.md.
irctest:
	scripts/irctest.sh
