#!/usr/bin/env bash
# Replication's cost on the write path (issue 14): three release nodes on this machine, the
# same `cfgnode bench` put load with --replicas 1 and then --replicas 3.
#
#   ./bench/replication.sh                 # 10 s per run; NO_BUILD=1 skips cargo build --release
#   SECS=20 ./bench/replication.sh
#
# The client (QUIC, `cfgnode bench`) follows redirects, so each namespace's puts go to its
# holder; with --replicas 3 each put is answered once one follower has it too (a majority of 3).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
BIN=target/release/cfgnode
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT
TOKEN=replication-bench-token-0123456789abcdef
echo -n "$TOKEN" >"$DIR/token"

run() { # replicas
  local r=$1
  local base=$((20000 + r * 100))
  rm -rf "$DIR"/n*
  for i in 1 2 3; do
    # n1 makes the cluster key in its data dir on its first start; the others join with it.
    local join=()
    [ "$i" = 1 ] || join=(--join "127.0.0.1:$((base + 1))" --cluster-key-file "$DIR/n1/data/cluster.key")
    "$BIN" start --node-id "n$i" --data-dir "$DIR/n$i/data" --http "127.0.0.1:$((base + 10 + i))" \
      --listen "127.0.0.1:$((base + i))" --token-file "$DIR/token" \
      --replicas "$r" "${join[@]}" 2>"$DIR/n$i.log" &
    PIDS+=($!)
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$((base + 10 + i))/health" >/dev/null && break; sleep 0.1; done
  done
  # Every node sees three alive members.
  for i in 1 2 3; do
    for _ in $(seq 100); do
      n=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$((base + 10 + i))/v1/cluster/members" | grep -o '"state":"alive"' | wc -l || true)
      [ "$n" = 3 ] && break; sleep 0.2
    done
  done
  for c in 1 64; do
    echo "### --replicas $r, put, concurrency $c"
    "$BIN" bench --addr "127.0.0.1:$((base + 1))" --token "$TOKEN" --insecure --op put \
      --concurrency "$c" --duration "${SECS}s" 2>"$DIR/bench.err" || cat "$DIR/bench.err"
  done
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  PIDS=()
}
run 1
run 3
