#!/usr/bin/env bash
# Proxy benchmark (issue 13): cfgnode's reverse proxy vs nginx with one worker, same machine,
# same wrk load, run back to back.
#
#   ./bench/proxy.sh                  # 3 rounds of 15 s per proxy
#   ROUNDS=5 SECS=20 ./bench/proxy.sh
#   NO_BUILD=1 ./bench/proxy.sh       # skip `cargo build --release`
#   NO_CEILING=1 ./bench/proxy.sh     # skip the backends' direct rate
#
# What it does:
#   1. installs nginx-light if `nginx` is missing (apt-get; sudo unless root); wrk must be at
#      /usr/bin/wrk (apt-get install wrk);
#   2. `cargo build --release` (unless NO_BUILD=1);
#   3. starts 2 backends: two nginx instances, one worker each, answering `200 ok` (2 bytes,
#      text/plain) on 127.0.0.1:$B1 and :$B2;
#   4. measures the backends' direct rate, the ceiling: wrk against one backend, then two wrk
#      at once (64 connections each) against both, the rates summed;
#   5. starts a cfgnode node with `--proxy 127.0.0.1:$CFG_PROXY --proxy-namespaces bench` and
#      creates route `bench/web` (host `bench.local`, static targets = both backends) over the
#      HTTP admin API with DATA_DIR/admin.token, waiting until the proxy answers 200;
#   6. starts nginx as a round-robin proxy on 127.0.0.1:$NGX_PROXY: `worker_processes 1`,
#      `access_log off`, an `upstream` of both backends with `keepalive`, `proxy_http_version
#      1.1`, `proxy_set_header Connection ""`, and the same X-Forwarded-For/-Proto/-Host headers
#      cfgnode sets (so both do the same work);
#   7. ROUNDS times, alternating which goes first: wrk -t2 -c128 -d${SECS}s --latency against
#      each proxy (Host: bench.local, GET /), then prints req/s, p50, p99 per run, the medians,
#      and the ratio cfgnode/nginx.
#
# Fairness: nginx runs one worker; cfgnode runs its default release build and runtime (one
# tokio worker per core, 2 here). Both proxies, both backends and wrk share the machine's cores
# (2 on the project VM), so every figure is a lower bound and the two proxies compete with the
# backends and the load generator for CPU in the same way. Only one proxy is loaded at a time;
# the idle one sleeps in epoll. The VM is noisy (±20 % between runs): compare the medians.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-15}
CONNS=${CONNS:-128}
B1=${B1:-19001}
B2=${B2:-19002}
NGX_PROXY=${NGX_PROXY:-19080}
CFG_PROXY=${CFG_PROXY:-19081}
CFG_HTTP=${CFG_HTTP:-19090}
BIN=target/release/cfgnode
WRK=/usr/bin/wrk
HOST=bench.local

if ! command -v nginx >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get install -y nginx-light; else sudo apt-get install -y nginx-light; fi
fi
NGINX=$(command -v nginx)
[ -x "$WRK" ] || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release
[ -x "$BIN" ] || { echo "$BIN is missing: cargo build --release" >&2; exit 1; }

DIR=$(mktemp -d)
chmod 755 "$DIR"   # nginx workers run as nobody when started by root
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT

# An nginx instance in $DIR/$1 with the given `http {}` body, in the foreground (we own its pid).
start_nginx() {
  local name=$1 http=$2 prefix="$DIR/$1"
  mkdir -p "$prefix/logs"
  cat >"$prefix/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_body_temp_path $prefix/body;
  proxy_temp_path $prefix/proxy;
  $http
}
EOF
  "$NGINX" -p "$prefix" -e "$prefix/logs/error.log" -c "$prefix/nginx.conf" &
  PIDS+=($!)
}

wait_200() { # url [host]
  for _ in $(seq 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: ${2:-localhost}" "$1")" = 200 ] && return 0
    sleep 0.05
  done
  echo "no 200 from $1" >&2; return 1
}

# wrk with --latency; prints "req/s p50 p99" (latencies in ms).
run_wrk() { # url connections
  "$WRK" -t2 -c"$2" -d"${SECS}s" --latency -H "Host: $HOST" "$1" | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) } /^Requests\/sec/ { rps = $2 }
    /Non-2xx|Socket errors/ { print "wrk: " $0 > "/dev/stderr" }
    END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

echo "== starting backends (nginx, 1 worker each, 'return 200 ok') on :$B1 and :$B2"
for port in $B1 $B2; do
  start_nginx "backend$port" "server { listen 127.0.0.1:$port backlog=4096; location / { default_type text/plain; return 200 'ok'; } }"
done
wait_200 "http://127.0.0.1:$B1/"; wait_200 "http://127.0.0.1:$B2/"

echo "== starting cfgnode (release, proxy on :$CFG_PROXY) and nginx proxy (1 worker) on :$NGX_PROXY"
"$BIN" start --data-dir "$DIR/data" --http "127.0.0.1:$CFG_HTTP" --listen 127.0.0.1:0 \
  --proxy "127.0.0.1:$CFG_PROXY" --proxy-namespaces bench 2>"$DIR/node.log" &
PIDS+=($!)
CFG_PID=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$CFG_HTTP/health" >/dev/null && break; sleep 0.05; done
TOKEN=$(cat "$DIR/data/admin.token")
curl -sf -X PUT -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  "http://127.0.0.1:$CFG_HTTP/v1/namespaces/bench/routes/web" \
  -d "{\"hosts\":[\"$HOST\"],\"backend\":{\"targets\":[\"http://127.0.0.1:$B1\",\"http://127.0.0.1:$B2\"]}}" >/dev/null
wait_200 "http://127.0.0.1:$CFG_PROXY/" "$HOST"

start_nginx proxy "
  upstream backends { server 127.0.0.1:$B1; server 127.0.0.1:$B2; keepalive 256; keepalive_requests 1000000; keepalive_timeout 75s; }
  server {
    listen 127.0.0.1:$NGX_PROXY backlog=4096;
    location / {
      proxy_pass http://backends;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme;
      proxy_set_header X-Forwarded-Host \$http_host;
    }
  }"
NGX_PID=${PIDS[-1]}
wait_200 "http://127.0.0.1:$NGX_PROXY/" "$HOST"

# CPU time (user + system, in clock ticks) of a process and its children (nginx's workers).
cpu_ticks() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

if [ "${NO_CEILING:-0}" != 1 ]; then
echo "== ceiling: backends direct (wrk -t2, ${SECS}s)"
read -r one p50 p99 < <(run_wrk "http://127.0.0.1:$B1/" "$CONNS")
printf "one backend, %d conns: %s req/s  p50 %s ms  p99 %s ms\n" "$CONNS" "$one" "$p50" "$p99"
half=$((CONNS / 2))
run_wrk "http://127.0.0.1:$B1/" "$half" >"$DIR/d1" & w1=$!
run_wrk "http://127.0.0.1:$B2/" "$half" >"$DIR/d2" & w2=$!
wait $w1 $w2
read -r r1 a1 b1 <"$DIR/d1"; read -r r2 a2 b2 <"$DIR/d2"
printf "both backends, %d conns each (2 wrk): %d req/s  (p99 %s / %s ms)\n" "$half" $((r1 + r2)) "$b1" "$b2"
fi

echo "== proxies: wrk -t2 -c$CONNS -d${SECS}s --latency, $ROUNDS rounds, alternating order"
: >"$DIR/results"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then order="cfgnode nginx"; else order="nginx cfgnode"; fi
  for who in $order; do
    if [ "$who" = cfgnode ]; then port=$CFG_PROXY pid=$CFG_PID; else port=$NGX_PROXY pid=$NGX_PID; fi
    before=$(cpu_ticks "$pid")
    read -r rps p50 p99 < <(run_wrk "http://127.0.0.1:$port/" "$CONNS")
    after=$(cpu_ticks "$pid")
    # The proxy's CPU per request served, in microseconds: a figure the machine's noise moves
    # far less than the rates (it does not depend on who else got the cores).
    us=$(awk -v t=$((after - before)) -v hz="$HZ" -v r="$rps" -v s="$SECS" 'BEGIN { printf "%.1f", t / hz * 1e6 / (r * s) }')
    echo "$who $rps $p50 $p99 $us" >>"$DIR/results"
    printf "round %d  %-8s %8s req/s  p50 %7s ms  p99 %7s ms  cpu %5s us/req\n" "$round" "$who" "$rps" "$p50" "$p99" "$us"
  done
done

echo "== medians over $ROUNDS rounds"
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
printf "| proxy | req/s | p50 ms | p99 ms | CPU us/req |\n|---|---:|---:|---:|---:|\n"
for who in cfgnode nginx; do
  rps=$(awk -v w=$who '$1 == w { print $2 }' "$DIR/results" | median)
  p50=$(awk -v w=$who '$1 == w { print $3 }' "$DIR/results" | median)
  p99=$(awk -v w=$who '$1 == w { print $4 }' "$DIR/results" | median)
  cpu=$(awk -v w=$who '$1 == w { print $5 }' "$DIR/results" | median)
  printf "| %s | %s | %s | %s | %s |\n" "$who" "$rps" "$p50" "$p99" "$cpu"
  eval "${who}_rps=$rps ${who}_p99=$p99"
done
awk -v a="$cfgnode_rps" -v b="$nginx_rps" -v c="$cfgnode_p99" -v d="$nginx_p99" \
  'BEGIN { printf "ratio cfgnode/nginx: req/s %.2fx, p99 %.2fx (lower is better)\n", a / b, c / d }'
