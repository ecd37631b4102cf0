# Shared by the bench scripts: start three release nodes on loopback and wait until each sees
# the other two alive. Expects BIN, DIR (with DIR/token) and TOKEN set, and a PIDS array.
#
#   start_three REPLICAS BASE_PORT   # QUIC on BASE+1..3, HTTP on BASE+11..13
start_three() {
  local r=$1 base=$2
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
  for i in 1 2 3; do
    for _ in $(seq 100); do
      n=$(curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$((base + 10 + i))/v1/cluster/members" | grep -o '"state":"alive"' | wc -l || true)
      [ "$n" = 3 ] && break; sleep 0.2
    done
  done
  # A node left on these ports by an earlier run answers the checks above in place of one that
  # could not bind: every node started here must still be running.
  for i in 1 2 3; do
    local pid=${PIDS[${#PIDS[@]} - 4 + i]}
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "n$i did not start (is something else on ports $((base + i)) / $((base + 10 + i))?):" >&2
      cat "$DIR/n$i.log" >&2
      exit 1
    fi
  done
}

# The set-up bench/etcd.sh, bench/put-cpu.sh and bench/mixed.sh share: a temp DIR removed at exit (after the
# nodes in PIDS are stopped), and the shared bench TOKEN (exported, and in DIR/token).
bench_setup() {
  DIR=$(mktemp -d)
  PIDS=()
  trap 'stop_all; rm -rf "$DIR"' EXIT
  TOKEN=etcd-bench-shared-token-0123456789abcdef
  export TOKEN
  echo -n "$TOKEN" >"$DIR/token"
}
stop_all() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null; PIDS=(); }
