#!/usr/bin/env bash
# Gets while puts run (issue 14): three release nodes as bench/etcd.sh starts them (the four
# bench namespaces claimed onto n1, --replicas 3), 3 s of puts to write every key, then for
# SECS s at once: wrk -t1 -c32 of puts (bench/http-put-fixed.lua) and wrk -t1 -c32 of gets
# (bench/http-get.lua) on the same keys. A linearizable get of a namespace with writes in
# flight waits for them (a quorum round, and the commit of the holder's open transaction).
#
#   ./bench/mixed.sh                        # SECS=8, C=32 connections each
#   BIN=/tmp/other-build ./bench/mixed.sh
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/cfgnode}
SECS=${SECS:-8}
C=${C:-32}
. bench/lib.sh
bench_setup
eval "$(sed -n '/^cfgnode_cluster()/,/^}/p' bench/etcd.sh)"
cfgnode_cluster "${R:-3}" 21000
url=http://127.0.0.1:21011
wrk -t2 -c64 -d3s -s bench/http-put-fixed.lua "$url" >/dev/null
wrk -t1 -c"$C" -d"${SECS}s" --latency -s bench/http-put-fixed.lua "$url" >"$DIR/put.out" &
puts=$!
wrk -t1 -c"$C" -d"${SECS}s" --latency -s bench/http-get.lua "$url" >"$DIR/get.out"
wait "$puts"
for kind in put get; do
  echo "### $kind, $C connections, while the other runs"
  grep -E "Requests/sec|^ +50%|^ +99%|Non-2xx" "$DIR/$kind.out"
done
