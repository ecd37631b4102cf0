#!/usr/bin/env bash
# CPU per replicated put (issue 14): three release nodes as bench/etcd.sh starts them (the four
# bench namespaces claimed onto n1), 3 s of warm-up, then 8 s of wrk -c64 with
# bench/http-put-fixed.lua, and each node's CPU time from /proc/PID/stat before and after.
# Prints wrk's figures, the CPU ticks (1/100 s) of n1 (the holder), n2 and n3, and the batch and
# commit metrics of n1 and n2. µs per put = ticks * 10 000 / (puts/s * SECS).
#
#   ./bench/put-cpu.sh                      # R=3 replicas, C=64 connections, SECS=8
#   R=1 C=24 BIN=/tmp/other-build ./bench/put-cpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/cfgnode}
SECS=${SECS:-8}
. bench/lib.sh
bench_setup
eval "$(sed -n '/^cfgnode_cluster()/,/^}/p' bench/etcd.sh)"
cfgnode_cluster "${R:-3}" 21000
wrk -t2 -c"${C:-64}" -d3s -s bench/http-put-fixed.lua http://127.0.0.1:21011 >/dev/null
cpu() { for p in "${PIDS[@]}"; do awk '{print $14+$15}' "/proc/$p/stat"; done | tr '\n' ' '; }
before=$(cpu)
wrk -t2 -c"${C:-64}" -d"${SECS}s" --latency -s bench/http-put-fixed.lua http://127.0.0.1:21011 | grep -E "Requests/sec|50%|99%|Non"
after=$(cpu)
echo "cpu ticks (1/100 s) of n1 n2 n3: before $before after $after"
for port in 21011 21012; do
  curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$port/metrics" |
    grep -E "batch_size_(sum|count)|commit_duration_seconds_(sum|count)|checkpoints_total|storage_commits_total|open_commits_total"
done
