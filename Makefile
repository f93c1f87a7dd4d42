# critpath's entry points. The README's two set-up commands are `make run` and `make test`;
# both install what they need first (scripts/setup.sh, idempotent).
#
# Builds share one target dir outside the clone (.cargo/config.toml): /var/tmp/critpath-target.

SHELL := /bin/bash
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),/var/tmp/critpath-target)
RELEASE := $(TARGET_DIR)/release

.PHONY: setup build run test lint unit bench-overhead

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release --bins

# The main job. For now: profile a demo workload with known hot functions (3:1) and show the
# hottest stacks. (`critpath run`, the always-on agent + server, replaces this when it lands.)
run: build
	$(RELEASE)/critpath record -F 99 --format folded -o critpath-demo.folded -- $(RELEASE)/cpu_ratio 5
	@echo "hottest stacks (critpath-demo.folded):"
	@sort -t' ' -k2 -nr critpath-demo.folded | head -5 | awk '{n=split($$0,f,";"); print "  " $$NF " samples: ... " f[n-2] " -> " f[n-1] " -> " f[n]}' | sed 's/ [0-9]*$$//'

lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Every test, kernel tests included (they need root; under CI=true a skipped kernel test fails).
test: lint
	cargo build --bins
	cargo test --workspace

bench-overhead: build
	python3 bench/overhead.py --pairs 10 --settle 1.5 -- $(RELEASE)/cpu_bench --millions 1500
