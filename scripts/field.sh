#!/usr/bin/env bash
# The whole field benchmark (issue: "why slow" on programs we did not write): every scenario of
# tests/field/manifest.json run for real under `critpath run` (explain and regressions through
# the HTTP API over the store) and under `critpath record`, each answer scored against the
# scenario's measured culprit. Needs root. Writes models/eval/field.json and prints the table.
#
#   scripts/field.sh [SECONDS]          # seconds per run (default 10); about 20 minutes
#
# The truth each scenario is scored against is measured separately, by perturbation and
# configuration experiments: python3 tests/field/truth.py (tests/field/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
target="${CARGO_TARGET_DIR:-/var/tmp/critpath-target}"
bash scripts/setup.sh
cargo build --release --bins
"$target/release/critpath" eval --field tests/field --field-seconds "$seconds" \
  --json models/eval/field.json
