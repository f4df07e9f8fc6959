#!/usr/bin/env python3
"""Fault soak for myquorum's replication (run by hand; not part of `cargo test`).

Three mariadbd and a myquorum proxy (ports 3721-3723, 6701). Six clients run bank transfers
(BEGIN; two UPDATEs; INSERT; COMMIT, some with a savepoint rolled back; some as a
CALL, alone, first after BEGIN or after a read in the transaction, of a procedure that reads the source balance with a plain SELECT … INTO and writes what it
read, which only a serializable run keeps consistent) and autocommit inserts with UUID(); one client runs DDL (CREATE/ALTER/DROP TABLE, CREATE INDEX) and inserts into the
tables it makes; one takes ids from a sequence (CACHE 50, so its SETVALs for the followers
come often) with `SELECT NEXTVAL` and with NEXTVAL in INSERTs. Every 4-9 s a random fault: kill -9 of the proxy (restarted), kill -9 of the
primary or a follower (restarted after 1-6 s, failover elects a new primary), SIGSTOP of a
replica for 1-4 s. At the end, once every replica is live and caught up, each replica is read
directly: the balances sum to the start, match the transfers present, every acknowledged
transfer and insert is there, nothing that failed before COMMIT is, no savepoint-rolled-back
row is, every table's schema and checksum are equal on all replicas, every acknowledged
sequence id is there, and no sequence value was handed out twice (a duplicate key on an id
the sequence gave: a new primary that went back below a value its predecessor gave).

usage: python3 tests/soak/bank_chaos.py [BINARY] [SECONDS] [SEED]
       (defaults: target/release/myquorum, 120, time-based; exit 0 = PASS)
       MYQ_PREFER_SOCKET=true: the proxy reaches the servers over their Unix sockets.
Needs mariadbd, mariadb-install-db and PyMySQL (pip install pymysql).
"""
import os, random, re, signal, subprocess, sys, threading, time
import pymysql

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/myquorum")
DURATION = float(sys.argv[2]) if len(sys.argv) > 2 else 120.0
SEED = int(sys.argv[3]) if len(sys.argv) > 3 else int(time.time())
random.seed(SEED)
WORK = f"/tmp/myquorum-soak-{os.getpid()}"
PORTS = [3721, 3722, 3723]
PROXY = 6701
ACCOUNTS = 20
START = 1000
THREADS = 6

def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)

subprocess.run(["rm", "-rf", WORK])
os.makedirs(WORK)

class Db:
    def __init__(self, i):
        self.i, self.port = i, PORTS[i]
        self.dir = f"{WORK}/db{i}"
        # Its own tmpdir: a starting server deletes every #sql* file in it, which in a
        # shared /tmp are the other servers' live temporary tables.
        os.makedirs(f"{self.dir}/tmp")
        subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={self.dir}/data",
                        "--auth-root-authentication-method=normal", "--skip-test-db", "--user=root"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        self.proc = None
        self.stopped = False
        self.start()

    def start(self):
        self.proc = subprocess.Popen(
            ["mariadbd", "--no-defaults", f"--datadir={self.dir}/data", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.dir}/sock", f"--pid-file={self.dir}/pid",
             f"--log-error={self.dir}/err.log", f"--tmpdir={self.dir}/tmp", "--skip-name-resolve", "--innodb-buffer-pool-size=64M",
             "--max-connections=500", "--user=root"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(120):
            try:
                pymysql.connect(host="127.0.0.1", port=self.port, user="root").close()
                return
            except Exception:
                time.sleep(0.25)
        raise SystemExit(f"db{self.i} did not start")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

dbs = [Db(i) for i in range(3)]
conf = f"{WORK}/proxy.toml"
open(conf, "w").write(f"""
[proxy]
listen = "127.0.0.1:{PROXY}"
[backend]
user = "root"
password = ""
health_interval_ms = 300
prefer_socket = {os.environ.get("MYQ_PREFER_SOCKET", "false")}
[[users]]
name = "root"
password = ""
[replication]
wal_dir = "{WORK}/wal"
commit_timeout_ms = 3000
election_min_uptime_ms = 2000
[[shards]]
replicas = [{", ".join(f'"127.0.0.1:{p}"' for p in PORTS)}]
""")

proxy = None
proxy_log = open(f"{WORK}/proxy.log", "a")
def start_proxy():
    global proxy
    proxy = subprocess.Popen([BIN, "serve", "-c", conf], stdout=proxy_log, stderr=proxy_log,
                             env={**os.environ, "RUST_LOG": "info"})
    for _ in range(200):
        try:
            pymysql.connect(host="127.0.0.1", port=PROXY, user="root").close()
            return
        except Exception:
            time.sleep(0.1)
    log("proxy did not come up in 20 s")

start_proxy()
c = pymysql.connect(host="127.0.0.1", port=PROXY, user="root", autocommit=True)
cur = c.cursor()
cur.execute("CREATE DATABASE bank")
cur.execute("CREATE TABLE bank.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL)")
cur.execute("CREATE TABLE bank.transfers (id BIGINT PRIMARY KEY, src INT, dst INT, amount INT, "
            "at TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6))")
cur.execute("CREATE TABLE bank.events (id BIGINT AUTO_INCREMENT PRIMARY KEY, tag BIGINT NOT NULL, "
            "u VARCHAR(40))")
cur.execute("INSERT INTO bank.accounts VALUES " + ",".join(f"({i},{START})" for i in range(ACCOUNTS)))
# Writes the balance it read (a lost update under REPEATABLE READ's snapshot read; the proxy
# runs an autocommit program SERIALIZABLE, so its reads lock and agree with the log's order).
cur.execute("CREATE PROCEDURE bank.transfer(t BIGINT, s INT, d INT, amt INT) BEGIN "
            "DECLARE bal BIGINT; "
            "SELECT balance INTO bal FROM bank.accounts WHERE id = s; "
            "IF bal >= amt THEN "
            "UPDATE bank.accounts SET balance = bal - amt WHERE id = s; "
            "UPDATE bank.accounts SET balance = balance + amt WHERE id = d; "
            "INSERT INTO bank.transfers (id, src, dst, amount) VALUES (t, s, d, amt); "
            "ELSE INSERT INTO bank.transfers (id, src, dst, amount) VALUES (t, s, d, 0); "
            "END IF; END")
cur.execute("CREATE SEQUENCE bank.ids CACHE 50")
cur.execute("CREATE TABLE bank.seq_rows (id BIGINT PRIMARY KEY, how CHAR(1) NOT NULL)")
c.close()

acked, not_committed, unknown = set(), set(), set()
ev_acked, ev_unknown = set(), set()
seq_acked, seq_twice = set(), []
lock = threading.Lock()
stop = threading.Event()
counter = [0]
errors = {}

def next_id():
    with lock:
        counter[0] += 1
        return counter[0]

def note_err(e):
    k = f"{type(e).__name__}:{e.args[0] if e.args else ''}"
    with lock:
        errors[k] = errors.get(k, 0) + 1

def worker_connection(retry_pause=0.2):
    """A load client's connection to the proxy, or None (after `retry_pause` seconds) while
    it does not answer."""
    try:
        return pymysql.connect(host="127.0.0.1", port=PROXY, user="root", autocommit=True,
                               connect_timeout=2, read_timeout=15, write_timeout=15)
    except Exception:
        time.sleep(retry_pause)
        return None

def client(n):
    conn = None
    rnd = random.Random(SEED * 100 + n)
    while not stop.is_set():
        if conn is None:
            conn = worker_connection()
            if conn is None:
                continue
        tid = next_id()
        kind = rnd.random()
        phase = "before"
        try:
            cur = conn.cursor()
            if kind < 0.15:
                a, b = rnd.sample(range(ACCOUNTS), 2)
                # Alone, as the first statement of the client's transaction (both run
                # SERIALIZABLE), or after a read in it (certified at COMMIT: refused with
                # 1213 when another transfer wrote the accounts after the snapshot).
                mode = rnd.random()
                in_begin = mode < 0.67
                if in_begin:
                    cur.execute("BEGIN")
                    if mode < 0.33:
                        cur.execute("SELECT balance FROM bank.accounts WHERE id = %s", (a,))
                        cur.fetchall()
                else:
                    phase = "commit"
                cur.execute("CALL bank.transfer(%s, %s, %s, %s)", (tid, a, b, rnd.randint(1, 9)))
                if in_begin:
                    phase = "commit"
                    cur.execute("COMMIT")
                with lock:
                    acked.add(tid)
            elif kind < 0.75:
                a, b = rnd.sample(range(ACCOUNTS), 2)
                amt = rnd.randint(1, 9)
                cur.execute("BEGIN")
                cur.execute("UPDATE bank.accounts SET balance = balance - %s WHERE id = %s", (amt, a))
                if rnd.random() < 0.2:
                    cur.execute("SAVEPOINT s1")
                    cur.execute("UPDATE bank.accounts SET balance = balance + 1000 WHERE id = %s", (b,))
                    cur.execute("INSERT INTO bank.transfers (id, src, dst, amount) VALUES (%s, 0, 0, 0)", (-tid,))
                    cur.execute("ROLLBACK TO SAVEPOINT s1")
                cur.execute("UPDATE bank.accounts SET balance = balance + %s WHERE id = %s", (amt, b))
                cur.execute("INSERT INTO bank.transfers (id, src, dst, amount) VALUES (%s, %s, %s, %s)",
                            (tid, a, b, amt))
                phase = "commit"
                cur.execute("COMMIT")
                with lock:
                    acked.add(tid)
            else:
                phase = "commit"
                cur.execute("INSERT INTO bank.events (tag, u) VALUES (%s, UUID())", (tid,))
                with lock:
                    ev_acked.add(tid)
        except Exception as e:
            note_err(e)
            with lock:
                if kind < 0.75:
                    (unknown if phase == "commit" else not_committed).add(tid)
                else:
                    ev_unknown.add(tid)
            try:
                conn.cursor().execute("ROLLBACK")
            except Exception:
                try:
                    conn.close()
                except Exception:
                    pass
                conn = None

def ddl_worker():
    rnd = random.Random(SEED * 7)
    tables, k = [], 0
    conn = None
    while not stop.is_set():
        time.sleep(rnd.uniform(0.3, 1.5))
        if conn is None:
            conn = worker_connection(retry_pause=0)
            if conn is None:
                continue
        k += 1
        r = rnd.random()
        try:
            cur = conn.cursor()
            if r < 0.25 or not tables:
                cur.execute(f"CREATE TABLE bank.t{k} (id INT AUTO_INCREMENT PRIMARY KEY, v INT, "
                            f"made DATETIME(6) DEFAULT NOW(6))")
                tables.append(k)
            elif r < 0.6:
                t = rnd.choice(tables)
                cur.execute(f"INSERT INTO bank.t{t} (v) VALUES ({k}), ({k + 1})")
            elif r < 0.8:
                t = rnd.choice(tables)
                cur.execute(f"ALTER TABLE bank.t{t} ADD COLUMN c{k} INT NOT NULL DEFAULT {k}")
            elif r < 0.9:
                t = rnd.choice(tables)
                cur.execute(f"CREATE INDEX i{k} ON bank.t{t} (v)")
            elif len(tables) > 2:
                t = tables.pop(rnd.randrange(len(tables)))
                cur.execute(f"DROP TABLE bank.t{t}")
        except Exception as e:
            note_err(e)
            try:
                conn.close()
            except Exception:
                pass
            conn = None

def sequence_worker():
    rnd = random.Random(SEED * 13)
    conn = None
    while not stop.is_set():
        if conn is None:
            conn = worker_connection()
            if conn is None:
                continue
        value = None
        try:
            cur = conn.cursor()
            if rnd.random() < 0.5:
                cur.execute("SELECT NEXTVAL(bank.ids)")
                value = cur.fetchone()[0]
                cur.execute("INSERT INTO bank.seq_rows VALUES (%s, 's')", (value,))
            else:
                cur.execute("INSERT INTO bank.seq_rows VALUES (NEXTVAL(bank.ids), 'i')")
                cur.execute("SELECT LASTVAL(bank.ids)")
                value = cur.fetchone()[0]
            with lock:
                seq_acked.add(value)
        except Exception as e:
            note_err(e)
            if e.args and e.args[0] == 1062:
                with lock:
                    seq_twice.append((value, str(e)))
            try:
                conn.close()
            except Exception:
                pass
            conn = None

threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(THREADS)]
threads.append(threading.Thread(target=ddl_worker, daemon=True))
threads.append(threading.Thread(target=sequence_worker, daemon=True))
for t in threads:
    t.start()

def primary_index():
    try:
        c = pymysql.connect(host="127.0.0.1", port=PROXY, user="root", connect_timeout=2)
        cur = c.cursor(pymysql.cursors.DictCursor)
        cur.execute("SHOW PROXY REPLICATION")
        rows = cur.fetchall()
        c.close()
        for r in rows:
            if r["state"].startswith("primary"):  # "primary (no fsync per commit: …)"
                return int(r["replica"]), rows
        return None, rows
    except Exception:
        return None, []

faults = []
t_end = time.time() + DURATION
while time.time() < t_end:
    time.sleep(random.uniform(4, 9))
    f = random.choice(["proxy", "primary", "follower", "stop", "proxy", "primary"])
    p, _ = primary_index()
    if f == "proxy":
        log("fault: kill -9 proxy")
        proxy.send_signal(signal.SIGKILL); proxy.wait()
        time.sleep(random.uniform(0.2, 2))
        start_proxy()
    elif f in ("primary", "follower"):
        if p is None:
            log("no primary known; skipping", f)
            continue
        i = p if f == "primary" else random.choice([x for x in range(3) if x != p])
        down = random.uniform(1, 6)
        log(f"fault: kill -9 {f} db{i} for {down:.1f}s")
        dbs[i].kill9()
        time.sleep(down)
        dbs[i].start()
    else:
        i = random.randrange(3)
        d = random.uniform(1, 4)
        log(f"fault: SIGSTOP db{i} for {d:.1f}s")
        dbs[i].proc.send_signal(signal.SIGSTOP)
        time.sleep(d)
        dbs[i].proc.send_signal(signal.SIGCONT)
    faults.append(f)
    with lock:
        log(f"   acked={len(acked)} unknown={len(unknown)} not_committed={len(not_committed)} "
            f"events={len(ev_acked)}/{len(ev_unknown)}")

stop.set()
for t in threads:
    t.join(timeout=30)
log("load stopped; errors seen:", errors)

# Wait for convergence: every replica live and at the log end.
ok = False
for _ in range(240):
    p, rows = primary_index()
    states = [(r["state"], int(r["behind_ts"])) for r in rows]
    if rows and all(s == "applying" or s.startswith("primary") for s, _ in states) and all(b == 0 for _, b in states):
        ok = True
        break
    time.sleep(0.5)
log("replication:", [(r["replica"], r["state"], r["behind_ts"]) for r in rows])
if not ok:
    log("NOT CONVERGED")

bad = False
sums = []
schemas = []
for d in dbs:
    c = pymysql.connect(host="127.0.0.1", port=d.port, user="root")
    cur = c.cursor()
    # A sequence's row is each server's own: the primary's shows its cache, a follower's the
    # last SETVAL logged.
    cur.execute("SHOW FULL TABLES FROM bank")
    names = sorted(r[0] for r in cur.fetchall() if r[1] != "SEQUENCE")
    sc = []
    for n in names:
        cur.execute(f"SHOW CREATE TABLE bank.{n}")
        create = cur.fetchone()[1]
        cur.execute(f"CHECKSUM TABLE bank.{n}")
        # The table's AUTO_INCREMENT= counter is not compared: a transaction that was rolled
        # back (refused for want of a quorum, or cut by a fault) used ids on the replica that
        # was primary then and nowhere else, as on MySQL.
        sc.append((n, re.sub(r" AUTO_INCREMENT=\d+", "", create), cur.fetchone()[1]))
    schemas.append(sc)
    log(f"db{d.i}: {len(names)} tables in bank")
if any(s != schemas[0] for s in schemas):
    bad = True
    for i, s in enumerate(schemas):
        for t in s:
            if any(t not in o for o in schemas):
                log(f"  db{i} differs: {t[0]} checksum {t[2]}")
for d in dbs:
    c = pymysql.connect(host="127.0.0.1", port=d.port, user="root")
    cur = c.cursor()
    cur.execute("SELECT id, balance FROM bank.accounts ORDER BY id")
    bal = dict(cur.fetchall())
    cur.execute("SELECT id, src, dst, amount FROM bank.transfers")
    tr = cur.fetchall()
    cur.execute("SELECT tag FROM bank.events")
    ev = {r[0] for r in cur.fetchall()}
    cur.execute("CHECKSUM TABLE bank.accounts, bank.transfers, bank.events")
    sums.append(tuple(r[1] for r in cur.fetchall()))
    ids = {r[0] for r in tr}
    expect = {i: START for i in range(ACCOUNTS)}
    for _, s, t, a in tr:
        expect[s] -= a
        expect[t] += a
    problems = []
    if sum(bal.values()) != START * ACCOUNTS:
        problems.append(f"sum {sum(bal.values())}")
    if expect != bal:
        problems.append("balances do not match the transfers present")
    lost = acked - ids
    if lost:
        problems.append(f"{len(lost)} acknowledged transfers lost: {sorted(lost)[:10]}")
    ghost = ids & not_committed
    if any(i < 0 for i in ids):
        problems.append("a transfer rolled back to a savepoint is present")
    if ghost:
        problems.append(f"{len(ghost)} transfers that failed before COMMIT are present: {sorted(ghost)[:10]}")
    extra = ids - acked - unknown
    if extra:
        problems.append(f"{len(extra)} transfers never issued: {sorted(extra)[:10]}")
    lost_ev = ev_acked - ev
    if lost_ev:
        problems.append(f"{len(lost_ev)} acknowledged events lost")
    cur.execute("SELECT id FROM bank.seq_rows")
    seq_ids = {r[0] for r in cur.fetchall()}
    lost_seq = seq_acked - seq_ids
    if lost_seq:
        problems.append(f"{len(lost_seq)} acknowledged sequence ids lost: {sorted(lost_seq)[:10]}")
    if seq_twice:
        problems.append(f"{len(seq_twice)} sequence values handed out twice: {seq_twice[:3]}")
    log(f"db{d.i}: transfers={len(ids)} (unknown committed {len(ids & unknown)}/{len(unknown)}) "
        f"events={len(ev)} sequence ids={len(seq_ids)} (acked {len(seq_acked)}) "
        + ("OK" if not problems else "PROBLEMS: " + "; ".join(problems)))
    bad |= bool(problems)
if len(set(sums)) != 1:
    log("CHECKSUMS DIFFER:", sums)
    bad = True
log(f"seed={SEED} faults={faults} acked={len(acked)} -> {'FAIL' if bad or not ok else 'PASS'}")
proxy.send_signal(signal.SIGKILL)
for d in dbs:
    try:
        d.proc.send_signal(signal.SIGCONT)
        d.kill9()
    except Exception:
        pass
if not (bad or not ok):
    subprocess.run(["rm", "-rf", WORK])
else:
    log(f"kept {WORK} (proxy.log, db*/err.log) for a look")
sys.exit(1 if bad or not ok else 0)
