#!/usr/bin/env bash
# A/B comparison of two cfgnode builds on one machine: both nodes run at once and the load
# generators alternate between them in short bursts, so both see the same machine conditions.
# On a shared VM the same build varies by 20 % between runs minutes apart; bursts seconds apart
# and a median over many of them cut that to a few percent.
#
# Usage: bench/ab.sh OLD_BINARY NEW_BINARY [ROUNDS] [SECONDS_PER_BURST]
# Needs: wrk (apt-get install wrk). Prints, per case, each build's median ops/s and NEW/OLD.
# Example (the build before a change, in a worktree with its own target dir):
#   git worktree add ../base <commit> && (cd ../base && CARGO_TARGET_DIR=../target-base cargo build --release)
#   bench/ab.sh ../target-base/release/cfgnode target/release/cfgnode 12 2
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1
NEW=$2
ROUNDS=${3:-12}
SECS=${4:-2}
DIR=$(mktemp -d)
trap 'kill $PID_OLD $PID_NEW 2>/dev/null || true; wait 2>/dev/null; rm -rf "$DIR"' EXIT

$OLD start --data-dir "$DIR/old" --http 127.0.0.1:18080 --listen 127.0.0.1:17000 2>"$DIR/old.log" &
PID_OLD=$!
$NEW start --data-dir "$DIR/new" --http 127.0.0.1:18081 --listen 127.0.0.1:17001 2>"$DIR/new.log" &
PID_NEW=$!
for port in 18080 18081; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.1; done
done

# One burst against one build; prints its ops/s. Arguments: old|new, case.
burst() {
  local bin=$OLD http=18080 quic=17000 data="$DIR/old"
  if [ "$1" = new ]; then bin=$NEW http=18081 quic=17001 data="$DIR/new"; fi
  local token
  token=$(cat "$data/admin.token")
  case $2 in
    http-put-64) TOKEN=$token wrk -t2 -c64 -d"${SECS}s" -s bench/http-put.lua "http://127.0.0.1:$http" | awk '/Requests\/sec/{print int($2)}' ;;
    http-get-16) TOKEN=$token wrk -t2 -c16 -d"${SECS}s" -s bench/http-get.lua "http://127.0.0.1:$http" | awk '/Requests\/sec/{print int($2)}' ;;
    quic-put-64) $bin bench --addr "127.0.0.1:$quic" --data-dir "$data" --op put --concurrency 64 --duration "${SECS}s" 2>/dev/null | awk '/throughput:/{print $2}' ;;
    quic-get-16) $bin bench --addr "127.0.0.1:$quic" --data-dir "$data" --op get --concurrency 16 --duration "${SECS}s" 2>/dev/null | awk '/throughput:/{print $2}' ;;
  esac
}

median() { sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}'; }

# The keys the GET cases read.
burst old http-put-64 >/dev/null
burst new http-put-64 >/dev/null

printf '| case | old median | new median | new/old |\n|---|---:|---:|---:|\n'
for case in http-put-64 http-get-16 quic-put-64 quic-get-16; do
  old=() new=()
  for round in $(seq "$ROUNDS"); do
    # Alternate who goes first, so neither build always runs on a warmer machine.
    if (( round % 2 )); then
      old+=("$(burst old $case)"); new+=("$(burst new $case)")
    else
      new+=("$(burst new $case)"); old+=("$(burst old $case)")
    fi
  done
  m_old=$(printf '%s\n' "${old[@]}" | median)
  m_new=$(printf '%s\n' "${new[@]}" | median)
  printf '| %s | %s | %s | %s |\n' "$case" "$m_old" "$m_new" "$(awk -v a="$m_old" -v b="$m_new" 'BEGIN{printf "%.2f", b/a}')"
  echo "<!-- old: ${old[*]} / new: ${new[*]} -->"
done
