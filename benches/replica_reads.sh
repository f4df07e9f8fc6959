#!/usr/bin/env bash
# Read scaling, one run, same machine: sysbench oltp_read_only (no BEGIN/COMMIT around the
# reads, so they can leave the primary: reads inside transactions stay on it) through myquorum
# over three replicas vs direct to one of them. Prints TPS, p95, the ratio, and how the proxy
# spread the reads.
#
# usage: [PS_MODE=auto|disable] benches/replica_reads.sh [seconds-per-run] [threads]
#        (defaults: prepared statements disabled, 10 s, 8 threads)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
THREADS=${2:-8}
PS_MODE=${PS_MODE:-disable}
WORK=$(mktemp -d /tmp/myquorum-readbench.XXXX)
PID=
cleanup() { [ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release --quiet
./target/release/myquorum playground --replicas 3 --port 6701 --backend-port 3721 --dir "$WORK/pg" >"$WORK/pg.log" 2>&1 &
PID=$!
for _ in $(seq 1 240); do grep -q "playground is up" "$WORK/pg.log" && break; sleep 0.5; done
for _ in $(seq 1 60); do mysql -h127.0.0.1 -P6701 -uroot -e 'CREATE DATABASE IF NOT EXISTS sbtest' >/dev/null 2>&1 && break; sleep 0.5; done
SB=(sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-db=sbtest
    --tables=4 --table-size=10000 --percentile=95 --db-ps-mode=$PS_MODE --skip-trx=on)
"${SB[@]}" --mysql-port=6701 oltp_read_only prepare >/dev/null
# Every replica has the tables before reads start.
for _ in $(seq 1 600); do
  mysql -h127.0.0.1 -P6701 -uroot -N -e 'SHOW PROXY REPLICATION' | awk -F'\t' '$6 != 0 {busy=1} END {exit busy}' && break
  sleep 0.2
done
run() { # port -> "tps p95"
  "${SB[@]}" --mysql-port="$1" --threads="$THREADS" --time="$SECS" oltp_read_only run 2>&1 |
    awk '/transactions:/ {gsub(/\(/,"",$3); t=$3} /95th percentile:/ {p=$3} END {print t, p}'
}
read -r dt dp < <(run 3721)
read -r mt mp < <(run 6701)
printf "%-16s %7s %9s %7s %9s %7s %9s %7s\n" test threads direct p95 myquorum p95 ratio ""
printf "%-16s %7s %9s %7s %9s %7s %9s\n" oltp_read_only "$THREADS" "$dt" "$dp" "$mt" "$mp" \
  "$(awk -v a="$mt" -v b="$dt" 'BEGIN { printf "%.2f", a / b }')"
echo "reads served per backend (SHOW PROXY BACKENDS):"
mysql -h127.0.0.1 -P6701 -uroot -e 'SHOW PROXY BACKENDS' | awk -F'\t' '{print "  " $2 "\t" $4 "\t" $9 "\t" $12}'
mysql -h127.0.0.1 -P6701 -uroot -N -e 'SHOW PROXY STATUS' | grep -E 'replica_reads|primary_fallbacks' | sed 's/^/  /'
