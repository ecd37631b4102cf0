#!/usr/bin/env bash
# Reproduces the QUIC and HTTP figures of docs/benchmarks.md on this machine.
# Needs: a release build (cargo build --release) and wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/cfgnode
SECS=${BENCH_SECS:-10}
DIR=$(mktemp -d)
trap 'kill $NODE 2>/dev/null || true; rm -rf "$DIR"' EXIT
$BIN start --data-dir "$DIR/data" --http 127.0.0.1:18080 --listen 127.0.0.1:17000 2>"$DIR/node.log" &
NODE=$!
for _ in $(seq 100); do curl -sf http://127.0.0.1:18080/health >/dev/null && break; sleep 0.1; done
export TOKEN=$(cat "$DIR/data/admin.token")
Q=(--addr 127.0.0.1:17000 --data-dir "$DIR/data")

echo "## QUIC (cfgnode bench)"
for c in 1 16 64; do
  echo "### put, concurrency $c"; $BIN bench "${Q[@]}" --op put --concurrency $c --duration ${SECS}s 2>/dev/null
done
echo "### get, concurrency 16"; $BIN bench "${Q[@]}" --op get --concurrency 16 --duration ${SECS}s 2>/dev/null
echo "### mixed, concurrency 16"; $BIN bench "${Q[@]}" --op mixed --concurrency 16 --duration ${SECS}s 2>/dev/null

echo "## HTTP (wrk)"
for c in 1 16 64; do
  echo "### put, connections $c"; wrk -t$(( c < 2 ? c : 2 )) -c$c -d${SECS}s --latency -s bench/http-put.lua http://127.0.0.1:18080 | grep -E "Requests/sec|50%|90%|99%"
done
echo "### get, connections 16"; wrk -t2 -c16 -d${SECS}s --latency -s bench/http-get.lua http://127.0.0.1:18080 | grep -E "Requests/sec|50%|90%|99%"
