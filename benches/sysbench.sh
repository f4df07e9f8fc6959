#!/usr/bin/env bash
# sysbench direct vs through myquorum, interleaved in one run, with proxy/direct ratios.
#
# usage: benches/sysbench.sh [seconds-per-run]    (default 10)
# Starts its own mariadbd (port 3406) and proxy (port 6406) from target/release/myquorum
# unless MYQ_DIRECT_PORT / MYQ_PROXY_PORT point at running ones.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
DIRECT=${MYQ_DIRECT_PORT:-}
PROXY=${MYQ_PROXY_PORT:-}
WORK=$(mktemp -d /tmp/myquorum-bench.XXXX)
cleanup() { [ -n "${PG_PID:-}" ] && kill "$PG_PID" 2>/dev/null && wait "$PG_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if [ -z "$DIRECT" ]; then
  cargo build --release --quiet
  ./target/release/myquorum playground --replicas 1 --port 6406 --backend-port 3406 --dir "$WORK/pg" >"$WORK/pg.log" 2>&1 &
  PG_PID=$!
  for _ in $(seq 1 120); do grep -q "playground is up" "$WORK/pg.log" && break; sleep 0.5; done
  grep -q "playground is up" "$WORK/pg.log" || { cat "$WORK/pg.log"; exit 1; }
  DIRECT=3406; PROXY=6406
fi

SB=(sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-db=sbtest --tables=4 --table-size=10000 --percentile=95)
mysql -h127.0.0.1 -P"$DIRECT" -uroot -e "DROP DATABASE IF EXISTS sbtest; CREATE DATABASE sbtest"
"${SB[@]}" --mysql-port="$DIRECT" oltp_read_write prepare >/dev/null

run() { # port test threads -> "qps p95"
  "${SB[@]}" --mysql-port="$1" --threads="$3" --time="$SECS" "$2" run 2>&1 |
    awk '/queries:/ {gsub(/\(/,"",$3); q=$3} /95th percentile:/ {p=$3} END {print q, p}'
}

printf "%-18s %7s %10s %8s %10s %8s %7s\n" test threads direct_qps p95_ms proxy_qps p95_ms ratio
for test in oltp_point_select oltp_read_only oltp_read_write; do
  for threads in 1 8; do
    read -r dq dp < <(run "$DIRECT" "$test" "$threads")
    read -r pq pp < <(run "$PROXY" "$test" "$threads")
    ratio=$(awk -v a="$pq" -v b="$dq" 'BEGIN { printf "%.2f", a / b }')
    printf "%-18s %7s %10s %8s %10s %8s %7s\n" "$test" "$threads" "$dq" "$dp" "$pq" "$pp" "$ratio"
  done
done
