#!/usr/bin/env python3
"""Closed-loop put latency over one keep-alive HTTP connection: each PUT waits for the answer
before the next one is sent, and every latency is kept, so the figures are exactly what one
such client saw (wrk corrects its tail for coordinated omission instead; docs/benchmarks.md).
The same 256-byte values and keys as bench/http-put.lua.

    TOKEN=... ./bench/put-latency.py PORT [SECONDS]
"""
import http.client
import os
import sys
import time


def main() -> None:
    token = os.environ["TOKEN"]
    port = int(sys.argv[1])
    secs = float(sys.argv[2]) if len(sys.argv) > 2 else 6.0
    body = '{"v":"' + "x" * 248 + '"}'
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    conn = http.client.HTTPConnection("127.0.0.1", port)
    latencies = []
    start = time.perf_counter()
    end = start + secs
    i = 0
    while time.perf_counter() < end:
        i += 1
        path = "/v1/namespaces/bench-%d/keys/k%d" % (i % 4, (i * 7919) % 1000)
        sent = time.perf_counter()
        conn.request("PUT", path, body=body, headers=headers)
        answer = conn.getresponse()
        answer.read()
        latencies.append(time.perf_counter() - sent)
        if answer.status != 200:
            sys.exit(f"PUT {path} answered {answer.status}")
    wall = time.perf_counter() - start
    latencies.sort()
    n = len(latencies)

    def ms(q: float) -> float:
        return latencies[min(n - 1, int(q * n))] * 1000

    print(
        f"{n} puts in {wall:.1f} s ({n / wall:.0f}/s), latencies summing to {sum(latencies):.2f} s: "
        f"p50 {ms(0.5):.2f} ms, p99 {ms(0.99):.2f} ms, p99.9 {ms(0.999):.2f} ms, max {latencies[-1] * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
