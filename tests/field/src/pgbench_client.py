#!/usr/bin/env python3
"""pgbench_client: Debian's pgbench (the real client, its TPC-B-like transaction) against the
field's PostgreSQL for --seconds, printing the field's JSON line from pgbench's
per-transaction log: transactions begun in the first 0.5 s are warm-up and not counted.

  pgbench_client --seconds S --dir DIR --port PORT [--clients N]
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import time

WARMUP = 0.5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--dir", required=True, help="the server's socket directory")
    ap.add_argument("--port", required=True)
    ap.add_argument("--clients", type=int, default=2)
    args = ap.parse_args()
    prefix = os.path.join(args.dir, "pgbench_log")
    for old in glob.glob(prefix + ".*"):
        os.remove(old)
    started = time.time()
    cmd = ["/usr/bin/pgbench", "-n", "-c", str(args.clients), "-j", str(args.clients),
           "-T", str(int(round(args.seconds))), "-h", args.dir, "-p", args.port,
           "-U", "postgres", "-l", "--log-prefix", prefix, "postgres"]
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if done.returncode != 0:
        sys.stderr.write(done.stderr.decode(errors="replace"))
        sys.exit(1)
    latencies = []
    for path in glob.glob(prefix + ".*"):
        with open(path) as f:
            for line in f:
                # client_id transaction_no latency_us script_no epoch_s epoch_us
                fields = line.split()
                if len(fields) < 6:
                    continue
                latency_us = float(fields[2])
                end = int(fields[4]) + int(fields[5]) / 1e6
                if end - latency_us / 1e6 >= started + WARMUP:
                    latencies.append(latency_us)
    latencies.sort()
    n = len(latencies)
    seconds = args.seconds - WARMUP

    def pct(p):
        return latencies[min(n - 1, int(p * n))] if n else 0.0

    print(json.dumps({
        "program": "pgbench_client", "requests": n, "seconds": seconds,
        "throughput": n / seconds, "p50_us": pct(0.5), "p90_us": pct(0.9),
        "p99_us": pct(0.99), "mean_us": sum(latencies) / n if n else 0.0,
        "max_us": latencies[-1] if n else 0.0, "scales": {},
    }))


if __name__ == "__main__":
    main()
