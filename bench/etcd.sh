#!/usr/bin/env bash
# Replicated cfgnode vs a 3-member etcd on this machine (issue 14), the same wrk load:
#   three `cfgnode start --replicas 3` nodes, HTTP PUT and GET of 256-byte values over 4
#   namespaces x 1000 keys (bench/http-put.lua, bench/http-get.lua), against the namespaces'
#   holder (all four claimed onto n1);
#   three etcd members, the v3 JSON gateway's put and (linearizable) range on the same keys
#   (bench/etcd.lua), against the leader.
# Then, single-client put latency with --replicas 1 and 3.
#
#   ./bench/etcd.sh                # 10 s per run; NO_BUILD=1 skips cargo build --release
#   SECS=20 CONNS=64 ./bench/etcd.sh
#
# Installs etcd-server and wrk with apt-get when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
SECS=${SECS:-10}
CONNS=${CONNS:-64}
BIN=target/release/cfgnode
command -v etcd >/dev/null || apt-get install -y etcd-server >/dev/null
command -v wrk >/dev/null || apt-get install -y wrk >/dev/null
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release
bench_setup
WRK=(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency)
figures() { grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true; }

cfgnode_cluster() { # replicas base_port
  local r=$1 base=$2
  start_three "$r" "$base"
  local http="http://127.0.0.1:$((base + 11))"
  for ns in 0 1 2 3; do
    curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'content-type: text/plain' -d x "$http/v1/namespaces/bench-$ns/keys/seed" >/dev/null
    curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'content-type: application/json' -d '{"node":"n1"}' "$http/v1/cluster/claims/bench-$ns" >/dev/null
    for _ in $(seq 100); do
      curl -sf -H "Authorization: Bearer $TOKEN" "$http/v1/cluster/placement/bench-$ns" | grep -q '"holder":"n1"' && break; sleep 0.1
    done
  done
}

echo "## cfgnode, 3 nodes, --replicas 3, wrk -c$CONNS against the holder"
cfgnode_cluster 3 21000
echo "### put"; "${WRK[@]}" -s bench/http-put.lua http://127.0.0.1:21011 | figures
echo "### get"; "${WRK[@]}" -s bench/http-get.lua http://127.0.0.1:21011 | figures
echo "### put, 1 connection"; wrk -t1 -c1 -d"${SECS}s" --latency -s bench/http-put.lua http://127.0.0.1:21011 | figures
stop_all

echo "## cfgnode, 3 nodes, --replicas 1, 1 connection"
cfgnode_cluster 1 21100
echo "### put, 1 connection"; wrk -t1 -c1 -d"${SECS}s" --latency -s bench/http-put.lua http://127.0.0.1:21111 | figures
stop_all

echo "## etcd $(etcd --version | head -1 | awk '{print $3}'), 3 members, wrk -c$CONNS against the leader"
CLUSTER="e1=http://127.0.0.1:22381,e2=http://127.0.0.1:22382,e3=http://127.0.0.1:22383"
for i in 1 2 3; do
  etcd --name "e$i" --data-dir "$DIR/e$i" \
    --listen-client-urls "http://127.0.0.1:2237$i" --advertise-client-urls "http://127.0.0.1:2237$i" \
    --listen-peer-urls "http://127.0.0.1:2238$i" --initial-advertise-peer-urls "http://127.0.0.1:2238$i" \
    --initial-cluster "$CLUSTER" --initial-cluster-state new --initial-cluster-token bench \
    2>"$DIR/e$i.log" &
  PIDS+=($!)
done
LEADER=""
for _ in $(seq 100); do
  for i in 1 2 3; do
    status=$(curl -sf -X POST -d '{}' "http://127.0.0.1:2237$i/v3/maintenance/status" || true)
    member=$(echo "$status" | grep -o '"member_id":"[0-9]*"' | grep -o '[0-9]*' || true)
    leader=$(echo "$status" | grep -o '"leader":"[0-9]*"' | grep -o '[0-9]*' || true)
    if [ -n "$member" ] && [ "$member" = "$leader" ]; then LEADER="http://127.0.0.1:2237$i"; fi
  done
  [ -n "$LEADER" ] && break; sleep 0.2
done
[ -n "$LEADER" ] || { echo "etcd elected no leader"; exit 1; }
echo "### put"; OP=put "${WRK[@]}" -s bench/etcd.lua "$LEADER" | figures
echo "### get"; OP=get "${WRK[@]}" -s bench/etcd.lua "$LEADER" | figures
echo "### put, 1 connection"; OP=put wrk -t1 -c1 -d"${SECS}s" --latency -s bench/etcd.lua "$LEADER" | figures
