#!/usr/bin/env bash
# Write throughput with replication, one run, same machine:
#   direct    one mariadbd, no replication
#   semisync  three mariadbd, MariaDB semi-synchronous replication (AFTER_SYNC, wait for 1)
#   myquorum  three mariadbd behind the proxy (WAL + Cabinet quorum, playground), followers
#             syncing every commit (innodb_flush_log_at_trx_commit=1) and the primary not
#             (the proxy sets it to 2, replication.primary_syncs_commits = false): an
#             acknowledged write is on disk on a follower and in the proxy's WAL
#   mq_f2     the same with replicas at innodb_flush_log_at_trx_commit=2: an acknowledgement
#             waits for the proxy's WAL sync instead of the replicas' (semi-sync's durability
#             class: one log synced, a second replica holding the write)
# Each configuration runs ROUNDS times, interleaved, after the servers settled (no replica
# still applying, dirty pages flushed back to a floor); prints median TPS and p95 per
# target and myquorum's ratios to the others. The medians matter: on a shared 2-core VM a
# single 10 s run varies by ±30 %.
#
# usage: [ROUNDS=3] benches/replication.sh [seconds-per-run]   (default 10 s)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/myquorum-repbench.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release --quiet
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

start_db() { # name port extra-args...
  local name=$1 port=$2; shift 2
  local d="$WORK/$name"
  mkdir -p "$d/tmp"  # own tmpdir: a starting server deletes every #sql* file in it
  mariadb-install-db --no-defaults --datadir="$d/data" --auth-root-authentication-method=normal \
    --skip-test-db --user=root >"$d/install.log" 2>&1
  "$MARIADBD" --no-defaults --datadir="$d/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$d/sock" --tmpdir="$d/tmp" --pid-file="$d/pid" --log-error="$d/err.log" --skip-networking=0 \
    --skip-name-resolve --innodb-buffer-pool-size=128M --innodb-log-file-size=64M \
    --max-connections=1000 --user=root "$@" &
  PIDS+=($!)
  for _ in $(seq 1 120); do mysql -h127.0.0.1 -P"$port" -uroot -e 'SELECT 1' >/dev/null 2>&1 && return; sleep 0.5; done
  cat "$d/err.log"; exit 1
}

# Direct: one server.
start_db direct 3501
# Semi-sync: primary 3511, replicas 3512, 3513.
start_db ss0 3511 --server-id=1 --log-bin=mysql-bin --binlog-format=ROW --sync-binlog=1 \
  --rpl-semi-sync-master-enabled=1 --rpl-semi-sync-master-wait-point=AFTER_SYNC --rpl-semi-sync-master-timeout=10000
# (MariaDB semi-sync always waits for one replica's acknowledgement.)
for i in 2 3; do
  start_db "ss$((i-1))" "351$i" --server-id="$i" --rpl-semi-sync-slave-enabled=1 --read-only=0
  mysql -h127.0.0.1 -P"351$i" -uroot -e "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=3511, \
    MASTER_USER='root', MASTER_USE_GTID=slave_pos; START SLAVE;"
done
sleep 1
mysql -h127.0.0.1 -P3511 -uroot -e "SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'" | tail -1
# myquorum: two playgrounds with three replicas each (flush at commit 1 and 2).
start_pg() { # name port backend-port flush
  ./target/release/myquorum playground --flush-at-commit "$4" --replicas 3 --port "$2" --backend-port "$3" --dir "$WORK/$1" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 240); do grep -q "playground is up" "$WORK/$1.log" && break; sleep 0.5; done
  for _ in $(seq 1 60); do mysql -h127.0.0.1 -P"$2" -uroot -e 'CREATE DATABASE IF NOT EXISTS probe' >/dev/null 2>&1 && break; sleep 0.5; done
}
start_pg pg 6501 3521 1
start_pg pg2 6502 3531 2

SB=(sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-db=sbtest --tables=4 --table-size=10000 --percentile=95)
for port in 3501 3511 6501 6502; do
  mysql -h127.0.0.1 -P"$port" -uroot -e "DROP DATABASE IF EXISTS sbtest; CREATE DATABASE sbtest"
  "${SB[@]}" --mysql-port="$port" oltp_read_write prepare >/dev/null
done

# Waits until no replica is still applying a previous run (semi-sync replicas apply after
# acknowledging; myquorum followers apply after holding) and InnoDB flushed the previous
# run's dirty pages back to a floor, so no run pays for another's tail.
SERVERS=(3501 3511 3512 3513 3521 3522 3523 3531 3532 3533)
replicas_idle() {
  local want port
  want=$(mysql -h127.0.0.1 -P3511 -uroot -N -e 'SELECT @@gtid_binlog_pos')
  [ "$(mysql -h127.0.0.1 -P3512 -uroot -N -e 'SELECT @@gtid_slave_pos')" = "$want" ] || return 1
  [ "$(mysql -h127.0.0.1 -P3513 -uroot -N -e 'SELECT @@gtid_slave_pos')" = "$want" ] || return 1
  for port in 6501 6502; do
    mysql -h127.0.0.1 -P"$port" -uroot -N -e 'SHOW PROXY REPLICATION' |
      awk -F'\t' '$6 != 0 {busy=1} END {exit busy}' || return 1
  done
}
pages_flushed() {
  local port d
  for port in "${SERVERS[@]}"; do
    d=$(mysql -h127.0.0.1 -P"$port" -uroot -N -e "SHOW GLOBAL STATUS LIKE 'Innodb_buffer_pool_pages_dirty'" | cut -f2)
    [ "${d:-0}" -gt 1500 ] && return 1
  done
  return 0
}
settle() {
  local i
  for i in $(seq 1 600); do replicas_idle && break; sleep 0.2; done
  for i in $(seq 1 40); do pages_flushed && break; sleep 0.5; done
  sleep 1
}

run() { # port test threads -> "tps p95"
  settle
  "${SB[@]}" --mysql-port="$1" --threads="$3" --time="$SECS" "$2" run 2>&1 |
    awk '/transactions:/ {gsub(/\(/,"",$3); t=$3} /95th percentile:/ {p=$3} END {print t, p}'
}

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf "%-16s %3s %8s %6s %8s %6s %8s %6s %8s %6s %7s %7s %7s\n" test thr direct p95 semisync p95 myquorum p95 mq_f2 p95 \
  mq/semi f2/semi mq/dir
for test in oltp_write_only oltp_read_write; do
  for threads in 1 8; do
    declare -A tps=() p95=()
    for _ in $(seq 1 "$ROUNDS"); do
      for port in 3501 3511 6501 6502; do
        read -r t p < <(run "$port" "$test" "$threads")
        tps[$port]+=" $t"; p95[$port]+=" $p"
      done
    done
    for port in 3501 3511 6501 6502; do
      tps[$port]=$(echo "${tps[$port]}" | median); p95[$port]=$(echo "${p95[$port]}" | median)
    done
    printf "%-16s %3s %8s %6s %8s %6s %8s %6s %8s %6s %7s %7s %7s\n" "$test" "$threads" \
      "${tps[3501]}" "${p95[3501]}" "${tps[3511]}" "${p95[3511]}" "${tps[6501]}" "${p95[6501]}" \
      "${tps[6502]}" "${p95[6502]}" "$(ratio "${tps[6501]}" "${tps[3511]}")" \
      "$(ratio "${tps[6502]}" "${tps[3511]}")" "$(ratio "${tps[6501]}" "${tps[3501]}")"
  done
done
# Replicas identical after the run (myquorum).
for port in 3521 3522 3523 3531 3532 3533; do
  echo "replica $port: $(mysql -h127.0.0.1 -P"$port" -uroot -N -e 'CHECKSUM TABLE sbtest.sbtest1' | cut -f2)"
done
# Where myquorum's commits spent their time, over all runs (p50/p99 ms): the primary's row
# carries the shard-wide phases, the followers' rows their receive (hold) and apply times.
for port in 6501 6502; do
  echo "commit phases, playground on $port:"
  mysql -h127.0.0.1 -P"$port" -uroot -e 'SHOW PROXY REPLICATION' |
    awk -F'\t' 'NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
      $col["state"] ~ /^primary/ {
        printf "  shard: sequence %s  wal_sync %s  quorum %s  primary_commit %s\n",
          $col["sequence_ms_p50/p99"], $col["wal_sync_ms_p50/p99"], $col["quorum_ms_p50/p99"],
          $col["primary_commit_ms_p50/p99"]; next }
      { printf "  follower %s: receive %s  apply %s\n", $col["replica"],
          $col["receive_ms_p50/p99"], $col["apply_ms_p50/p99"] }'
done
