# For people used to the original server's `make run`. Cargo does the work.

.PHONY: run test bench check

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
