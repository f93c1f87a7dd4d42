# critpath's entry points. The README's two set-up commands are `make run` and `make test`;
# both install what they need first (scripts/setup.sh, idempotent).
#
# Builds share one target dir outside the clone (.cargo/config.toml): /var/tmp/critpath-target.

SHELL := /bin/bash
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),/var/tmp/critpath-target)
RELEASE := $(TARGET_DIR)/release

.PHONY: demo setup build run test lint bench-overhead bench-offcpu bench-load

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --release --bins

# The main job: sample this machine (on-CPU and off-CPU), keep every sample in ./critpath-data
# and serve the HTTP API on http://127.0.0.1:7070 until Ctrl-C.
run: build
	$(RELEASE)/critpath run --data-dir critpath-data

# The earlier demo: record a workload with two hot functions (3:1) and print the hottest stacks.
demo: build
	$(RELEASE)/critpath record -F 99 --format folded -o critpath-demo.folded -- $(RELEASE)/cpu_ratio 5
	@python3 -c 'import sys; rows = sorted((l.rsplit(" ", 1) for l in open("critpath-demo.folded")), key=lambda r: -int(r[1])); total = sum(int(v) for _, v in rows); print("hottest stacks (leaf last) of", total, "samples:"); [print(f"  {int(v) / total:6.1%}  ... > " + " > ".join(s.split(";")[-3:])) for s, v in rows[:5]]'

lint: setup
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings

# Every test, kernel tests included (they need root; under CI=true a skipped kernel test fails).
test: lint
	cargo build --bins
	cargo test --workspace

# On-CPU sampling cost on a CPU-bound benchmark (README: Performance).
bench-overhead: build
	python3 bench/overhead.py --pairs 10 --settle 1.5 -- $(RELEASE)/cpu_bench --millions 1500

# Off-CPU tracing cost on a context-switch storm (README: Performance).
bench-offcpu: build
	python3 bench/overhead.py --pairs 12 --record-args "-a -F 19 --off-cpu" -- taskset -c 0 $(RELEASE)/pingpong

# The API's load test: profile queries of a 1 h window at 200/s while `critpath run` samples
# this machine into the same store (README: HTTP API). STORE: an hour captured here, e.g. by
# `critpath agent --duration 1h --data-dir STORE`; FROM/TO: that hour.
bench-load: build
	RELEASE=$(RELEASE) bench/load.sh $(STORE) $(FROM) $(TO) 200 30
