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
. bench/lib.sh
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
  start_three "$r" "$base"
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
