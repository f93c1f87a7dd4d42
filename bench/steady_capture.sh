#!/usr/bin/env bash
# A real 1 h system-wide capture of this machine running steady services rather than builds
# (README: Store and queries, disk per sample): `critpath agent` at its defaults samples
# everything while
#   - `critpath serve` answers distinct profile queries of a 1 h window of STORE at RATE/s
#     (loadgen, open loop: a real HTTP service, tokio + axum + polars),
#   - producer_consumer, sleeper (10 ms sleeps) and mutex_contention (the holder sleeps 500 µs
#     with the lock held) run from the tests/ workloads,
# then prints the store's bytes per sample (`synth_store stats`).
#
#   bench/steady_capture.sh OUT STORE FROM_MS TO_MS [SECONDS] [RATE]
#
# OUT must not exist. STORE is copied first. Needs root and a release build
# (`cargo build --release --bins`, `cargo build --release -p critpath-analyzer --example synth_store`).
set -euo pipefail
out=$1 store=$2 from=$3 to_ms=$4 seconds=${5:-3600} rate=${6:-10}
bin=${RELEASE:-/var/tmp/critpath-target/release}
[ ! -e "$out" ] || { echo "$out exists" >&2; exit 1; }
work=$(mktemp -d /var/tmp/critpath-steady.XXXXXX)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$store" "$work/store"
rm -f "$work/store/LOCK"

"$bin/critpath" agent --data-dir "$out" --duration "${seconds}s" 2> "$work/agent.log" &
agent=$!
sleep 3
"$bin/critpath" serve --data-dir "$work/store" --listen 127.0.0.1:0 2> "$work/serve.log" &
pids+=($!)
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's|^critpath: serving the API on http://||p' "$work/serve.log")
  [ -n "$addr" ] && break
  sleep 0.2
done
[ -n "$addr" ] || { cat "$work/serve.log"; exit 1; }
"$bin/loadgen" "$addr" "/api/v1/profile?from=$from&to={t}" --base "$to_ms" --rate "$rate" \
  --seconds "$seconds" --connections 2 > "$work/loadgen.log" 2>&1 &
pids+=($!)
"$bin/producer_consumer" "$seconds" > /dev/null &
pids+=($!)
"$bin/sleeper" "$seconds" --interval-ms 10 > /dev/null &
pids+=($!)
"$bin/mutex_contention" "$seconds" --held-sleep-us 500 > /dev/null &
pids+=($!)
wait "$agent"
cat "$work/loadgen.log"
"$bin/examples/synth_store" stats "$out"
