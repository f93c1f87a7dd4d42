#!/usr/bin/env python3
"""Health latency while hostile selectors hammer the query path.

Starts `critpath serve` over a store (`--data-dir`), then runs `--clients` threads that send,
back to back, the selector of the hardening issue (150 terms, each `=~"\\w{200}"`: a 5 KB URI)
to /api/v1/profile, /api/v1/explain and /api/v1/regressions, while one more thread asks
/api/v1/health every 20 ms. Reports the hostile queries' status codes and latency (median,
p99) and health's latency (median, p99, max). A baseline phase without the hostile clients runs
first, interleaved with the loaded phase `--rounds` times, so drift hits both alike.

Example (the README's figure):
  bench/hostile_queries.py --critpath target/release/critpath --data-dir STORE
"""

import argparse
import http.client
import statistics
import subprocess
import threading
import time
import urllib.parse


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    start = time.perf_counter()
    conn.request("GET", path, headers={"Host": "localhost"})
    response = conn.getresponse()
    response.read()
    conn.close()
    return response.status, time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--critpath", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--port", type=int, default=47071)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0, help="per phase")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    server = subprocess.Popen(
        [args.critpath, "serve", "--data-dir", args.data_dir, "--listen", f"127.0.0.1:{args.port}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                get(args.port, "/api/v1/health")
                break
            except OSError:
                time.sleep(0.1)
        selector = "{" + ",".join(f'comm=~"\\\\w{{200}}"' for _ in range(150)) + "}"
        query = urllib.parse.quote(selector)
        now = int(time.time() * 1000)
        window = f"from={now - 3_600_000}&to={now}"
        paths = [
            f"/api/v1/profile?{window}&query={query}",
            f"/api/v1/explain?{window}&query={query}",
            f"/api/v1/regressions?at={now - 600_000}&window=5m&query={query}",
        ]
        print(f"hostile URI: {len(paths[0])} bytes")
        results = {"baseline": [], "loaded": []}
        hostile = []
        statuses = {}
        for _ in range(args.rounds):
            for phase in ("baseline", "loaded"):
                stop = time.perf_counter() + args.seconds
                workers = []
                if phase == "loaded":
                    def hammer(i):
                        k = i
                        while time.perf_counter() < stop:
                            status, t = get(args.port, paths[k % len(paths)])
                            statuses[status] = statuses.get(status, 0) + 1
                            hostile.append(t)
                            k += 1
                    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(args.clients)]
                    for w in workers:
                        w.start()
                while time.perf_counter() < stop:
                    status, t = get(args.port, "/api/v1/health")
                    assert status == 200, status
                    results[phase].append(t)
                    time.sleep(0.02)
                for w in workers:
                    w.join()
        ms = lambda x: f"{x * 1e3:.2f} ms"
        print(f"hostile queries: {len(hostile)}, statuses {statuses}, median {ms(statistics.median(hostile))}, p99 {ms(percentile(hostile, 99))}")
        for phase, values in results.items():
            print(f"health {phase}: {len(values)} requests, median {ms(statistics.median(values))}, p99 {ms(percentile(values, 99))}, max {ms(max(values))}")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
