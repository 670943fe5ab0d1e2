# For people used to the original server's `make run`. Cargo does the work.

.PHONY: run test bench check

run:
	cargo run --release

# Installs what the tests need (netcat, promtool), then runs every test.
test:
	scripts/test-deps.sh
	cargo test

bench:
	cargo bench

# What CI runs.
check:
	.ci/run
