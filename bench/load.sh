#!/usr/bin/env bash
# The API's load test: `critpath run` (sampling this machine and writing its store all along)
# answers profile queries of a 1 h window at a fixed rate from an open-loop client, over
# loopback. Prints the achieved rate, latency percentiles and failures (README: HTTP API).
#
#   bench/load.sh STORE FROM TO [RATE] [SECONDS]
#
# FROM and TO in Unix milliseconds.
# STORE is copied first (the agent writes into the copy). A realistic store: an hour captured
# on this machine, e.g. `critpath agent --duration 1h --data-dir STORE`.
set -euo pipefail
store=$1 from=$2 to_ms=$3 rate=${4:-200} seconds=${5:-30}
bin=${RELEASE:-/var/tmp/critpath-target/release}
work=$(mktemp -d /var/tmp/critpath-load.XXXXXX)
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$work"' EXIT
cp -r "$store" "$work/store"
rm -f "$work/store/LOCK"
"$bin/critpath" run --data-dir "$work/store" --listen 127.0.0.1:0 2> "$work/log" &
server=$!
addr=""
for _ in $(seq 100); do
  addr=$(sed -n 's|^critpath: serving the API on http://||p' "$work/log")
  [ -n "$addr" ] && grep -q "critpath agent: sampling" "$work/log" && break
  sleep 0.2
done
[ -n "$addr" ] || { cat "$work/log"; exit 1; }
path="/api/v1/profile?from=$from&to=$to_ms"
# The first query loads the window's parts into the index (reported, not counted).
start=$(date +%s.%N)
curl -sf -o /dev/null "http://$addr$path"
echo "first query (cold index): $(echo "$(date +%s.%N) - $start" | bc) s"
echo "the same request repeated (answered from the response cache while the hour is unchanged):"
"$bin/loadgen" "$addr" "$path" --rate "$rate" --seconds "$seconds" --connections 8
# Every request distinct: the window's end moves by 1 ms per request (still 1 h, no cache hit).
echo "distinct requests (every one computed from the index):"
"$bin/loadgen" "$addr" "/api/v1/profile?from=$from&to={t}" --base "$to_ms" --rate "$rate" \
  --seconds "$seconds" --connections 8 || true
echo "agent while loaded: $(curl -s "http://$addr/api/v1/health" | python3 -c 'import json,sys; s=json.load(sys.stdin)["sampler"]; print(s["samples"], "samples,", s["batches_written"], "batches written,", s["batches_dropped"], "dropped")')"
