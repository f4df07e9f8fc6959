#!/usr/bin/env bash
# Write throughput with replication, one run, same machine:
#   direct    one mariadbd, no replication
#   semisync  three mariadbd, MariaDB semi-synchronous replication (AFTER_SYNC, wait for 1)
#   myquorum  three mariadbd behind the proxy (WAL + Cabinet quorum, playground)
# Prints TPS and p95 per target and myquorum's ratios to the others.
#
# usage: [FLUSH=1|2] benches/replication.sh [seconds-per-run]   (default 10 s)
#   FLUSH: innodb_flush_log_at_trx_commit of myquorum's three replicas (default 1: each
#   replica syncs every commit). With 2 an acknowledgement waits for the proxy's WAL sync
#   instead, the durability class of semi-sync (primary log synced + a replica that received).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-10}
FLUSH=${FLUSH:-1}
WORK=$(mktemp -d /tmp/myquorum-repbench.XXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cargo build --release --quiet
MARIADBD=$(command -v mariadbd || echo /usr/sbin/mariadbd)

start_db() { # name port extra-args...
  local name=$1 port=$2; shift 2
  local d="$WORK/$name"
  mkdir -p "$d"
  mariadb-install-db --no-defaults --datadir="$d/data" --auth-root-authentication-method=normal \
    --skip-test-db --user=root >"$d/install.log" 2>&1
  "$MARIADBD" --no-defaults --datadir="$d/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$d/sock" --pid-file="$d/pid" --log-error="$d/err.log" --skip-networking=0 \
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
# myquorum: playground with three replicas.
./target/release/myquorum playground --flush-at-commit "$FLUSH" --replicas 3 --port 6501 --backend-port 3521 --dir "$WORK/pg" >"$WORK/pg.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 240); do grep -q "playground is up" "$WORK/pg.log" && break; sleep 0.5; done
for _ in $(seq 1 60); do mysql -h127.0.0.1 -P6501 -uroot -e 'CREATE DATABASE IF NOT EXISTS probe' >/dev/null 2>&1 && break; sleep 0.5; done

SB=(sysbench --db-driver=mysql --mysql-host=127.0.0.1 --mysql-user=root --mysql-db=sbtest --tables=4 --table-size=10000 --percentile=95)
for port in 3501 3511 6501; do
  mysql -h127.0.0.1 -P"$port" -uroot -e "DROP DATABASE IF EXISTS sbtest; CREATE DATABASE sbtest"
  "${SB[@]}" --mysql-port="$port" oltp_read_write prepare >/dev/null
done

# Waits until no replica is still applying a previous run (semi-sync replicas apply after
# acknowledging; myquorum followers apply after holding), so no run pays for another's tail.
settle() {
  local want
  for _ in $(seq 1 600); do
    want=$(mysql -h127.0.0.1 -P3511 -uroot -N -e 'SELECT @@gtid_binlog_pos')
    [ "$(mysql -h127.0.0.1 -P3512 -uroot -N -e 'SELECT @@gtid_slave_pos')" = "$want" ] &&
      [ "$(mysql -h127.0.0.1 -P3513 -uroot -N -e 'SELECT @@gtid_slave_pos')" = "$want" ] &&
      mysql -h127.0.0.1 -P6501 -uroot -N -e 'SHOW PROXY REPLICATION' | awk -F'\t' '$6 != 0 {busy=1} END {exit busy}' &&
      { sleep 1; return; }
    sleep 0.2
  done
  echo "replicas did not settle" >&2
}

run() { # port test threads -> "tps p95"
  settle
  "${SB[@]}" --mysql-port="$1" --threads="$3" --time="$SECS" "$2" run 2>&1 |
    awk '/transactions:/ {gsub(/\(/,"",$3); t=$3} /95th percentile:/ {p=$3} END {print t, p}'
}

printf "%-16s %7s %9s %7s %9s %7s %9s %7s %9s %9s\n" test threads direct p95 semisync p95 myquorum p95 vs_direct vs_semisync
for test in oltp_write_only oltp_read_write; do
  for threads in 1 8; do
    read -r dt dp < <(run 3501 "$test" "$threads")
    read -r st sp < <(run 3511 "$test" "$threads")
    read -r mt mp < <(run 6501 "$test" "$threads")
    printf "%-16s %7s %9s %7s %9s %7s %9s %7s %9s %9s\n" "$test" "$threads" "$dt" "$dp" "$st" "$sp" "$mt" "$mp" \
      "$(awk -v a="$mt" -v b="$dt" 'BEGIN { printf "%.2f", a / b }')" \
      "$(awk -v a="$mt" -v b="$st" 'BEGIN { printf "%.2f", a / b }')"
  done
done
# Replicas identical after the run (myquorum).
for port in 3521 3522 3523; do
  echo "replica $port: $(mysql -h127.0.0.1 -P"$port" -uroot -N -e 'CHECKSUM TABLE sbtest.sbtest1' | cut -f2)"
done
