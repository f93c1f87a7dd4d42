#!/usr/bin/env bash
# Builds the ground-truth dataset in models/data (issue 6): measures every program not measured
# yet (resumable: stop it any time), records the measured programs with critpath (root), and
# packs labels and features into Parquet.
#
#   scripts/dataset.sh [WORK_DIR]        # default /var/tmp/critpath-dataset
#
# Measurements are the expensive part (about a minute per program here) and are kept in the
# repository (models/data/measurements/<family>-<seed>.json); they are restored into WORK_DIR
# first, so a fresh machine measures only what is missing. Recordings take seconds, follow the
# sampler, and are made again on each machine. The protocol below is the dataset's: changing it
# means measuring everything again.
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-/var/tmp/critpath-dataset}"
target="${CARGO_TARGET_DIR:-/var/tmp/critpath-target}"
seeds="1..30"
protocol=(--seconds 2 --rounds 1 --utilisation 0.6 --delta 0.3)

cargo build --bins
# Binaries copied aside, so that rebuilding while the dataset runs does not swap them under it.
bin="$work/bin"
mkdir -p "$bin" "$work/programs" models/data/measurements
cp "$target/debug/"{dataset,groundtruth,synth_service,critpath} "$bin/"

for m in models/data/measurements/*.json; do
  [ -e "$m" ] || continue
  dir="$work/programs/$(basename "$m" .json)"
  if [ ! -e "$dir/truth.json" ]; then
    mkdir -p "$dir"
    cp "$m" "$dir/truth.json"
  fi
done

"$bin/dataset" --out "$work" --seeds "$seeds" "${protocol[@]}" --record --cases-every 3
"$bin/dataset" --out "$work" --seeds "$seeds" "${protocol[@]}" --record-only --cases-every 3

for t in "$work"/programs/*/truth.json; do
  cp "$t" "models/data/measurements/$(basename "$(dirname "$t")").json"
done
cp "$work/manifest.json" models/data/manifest.json
"$bin/critpath" dataset pack "$work" --out models/data
