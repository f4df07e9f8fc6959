#!/usr/bin/env python3
"""Random replicated writes against a running myquorum proxy (run by hand; not part of
`cargo test`): a differential check of the write path.

THREADS clients (default 3) send pseudo-random writes to three tables for SECONDS: inserts
(ON DUPLICATE KEY UPDATE, IGNORE, REPLACE, … SELECT), updates and deletes (ranges, joins,
ORDER BY … LIMIT), with NOW(6), UUID(), RAND() with and without a seed, SYSDATE(),
LAST_INSERT_ID(), USER(), CURRENT_USER, user variables, subqueries and an ON UPDATE
CURRENT_TIMESTAMP column, 40 % of them in transactions with savepoints rolled back and
some transactions rolled back, and replica reads that leave warnings in between. A fourth
table starts with nothing that reads the clock (its writes go without `SET timestamp`)
while one more client keeps adding and removing a trigger and a DEFAULT CURRENT_TIMESTAMP
column on it: every write after such a DDL must set the clock again.
Deadlocks, duplicate keys and the proxy's 1235 refusals are expected and counted. At the
end `PROXY CHECKSUM TABLE` must show every replica with the primary's rows and no replica
may be quarantined.

usage: python3 tests/soak/random_writes.py PORT SECONDS SEED [THREADS]   (exit 0 = PASS)
       PREPARED=1: the writes go through server-side prepared statements (the binary
       protocol, mysql-connector-python's prepared cursor: pip install mysql-connector-python).
       CHURN=0: no schema changes during the run.
       Drops and recreates database `sq`. Needs PyMySQL (pip install pymysql).
"""
import os, random, sys, threading, time
import pymysql

PREPARED = os.environ.get("PREPARED") == "1"

PORT = int(sys.argv[1]); SECONDS = float(sys.argv[2]); SEED = int(sys.argv[3]); THREADS = int(sys.argv[4]) if len(sys.argv) > 4 else 3

def connect():
    return pymysql.connect(host="127.0.0.1", port=PORT, user="root", password="", autocommit=True, database="sq")

c = pymysql.connect(host="127.0.0.1", port=PORT, user="root", password="", autocommit=True)
cur = c.cursor()
cur.execute("DROP DATABASE IF EXISTS sq"); cur.execute("CREATE DATABASE sq")
cur.execute("CREATE TABLE sq.r (id INT AUTO_INCREMENT PRIMARY KEY, k INT NOT NULL, s VARCHAR(200), f DOUBLE, ts DATETIME(6), u CHAR(36), n INT NOT NULL DEFAULT 0, upd TIMESTAMP(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), UNIQUE KEY (k))")
cur.execute("CREATE TABLE sq.log (id BIGINT AUTO_INCREMENT PRIMARY KEY, r_id BIGINT, note VARCHAR(100), at DATETIME(6))")
cur.execute("CREATE TABLE sq.agg (k INT PRIMARY KEY, total DOUBLE, cnt INT)")
cur.execute("CREATE TABLE sq.p (id INT PRIMARY KEY, v BIGINT, w VARCHAR(40))")

errors = {}
lock = threading.Lock()

def stmt(rnd):
    k = rnd.randint(1, 60); a = rnd.randint(1, 60); b = a + rnd.randint(0, 5)
    expr = rnd.choice(["'x'", "CONCAT('v', %d)" % k, "REPEAT('z', %d)" % rnd.randint(0, 50), "NULL", "UPPER(UUID())", "CAST(NOW(6) AS CHAR)", "USER()", "LPAD(%d, 8, '0')" % k, "SYSDATE()", "CURRENT_USER"])
    num = rnd.choice(["RAND()", "RAND(%d)" % k, "%d.5" % k, "PI() * %d" % k, "UNIX_TIMESTAMP(NOW(6))", "LAST_INSERT_ID()", "@v", "(SELECT COUNT(*) FROM sq.log)"])
    return rnd.choice([
        f"INSERT INTO r (k, s, f, ts, u) VALUES ({k}, {expr}, {num}, NOW(6), UUID())",
        f"INSERT INTO r (k, s, f, ts, u) VALUES ({k}, {expr}, {num}, NOW(6), UUID()) ON DUPLICATE KEY UPDATE n = n + 1, s = VALUES(s)",
        f"INSERT IGNORE INTO r (k, s) VALUES ({k}, {expr}), ({k + 1}, {expr})",
        f"REPLACE INTO r (k, s, f) VALUES ({k}, {expr}, {num})",
        f"UPDATE r SET n = n + 1, s = CONCAT(COALESCE(s, ''), 'x') WHERE k BETWEEN {a} AND {b}",
        f"UPDATE r SET f = {num} WHERE k = {a}",
        f"UPDATE r SET u = UUID() WHERE k = {a}",
        f"UPDATE r SET u = UUID() WHERE k BETWEEN {a} AND {b}",
        f"DELETE FROM r WHERE k = {a}",
        f"DELETE FROM r WHERE k > {a} ORDER BY k LIMIT 2",
        f"INSERT INTO r (k, s) SELECT k + 1000, s FROM r WHERE k < {a} ORDER BY k",
        f"INSERT INTO log (r_id, note, at) VALUES (LAST_INSERT_ID(), {expr}, NOW(6))",
        f"SET @v = {k} * 2",
        f"UPDATE r SET n = @v WHERE k = {a}",
        f"INSERT INTO agg SELECT k, SUM(f), COUNT(*) FROM r WHERE k < {a} GROUP BY k ORDER BY k ON DUPLICATE KEY UPDATE total = VALUES(total), cnt = cnt + 1",
        f"UPDATE r JOIN agg ON agg.k = r.k SET r.n = agg.cnt WHERE r.k < {b}",
        f"DELETE r FROM r JOIN agg ON agg.k = r.k WHERE agg.cnt > {rnd.randint(3, 9)}",
        f"INSERT INTO log (r_id, note, at) SELECT id, s, ts FROM r WHERE k = {a}",
        f"UPDATE r SET s = {expr} ORDER BY k DESC LIMIT 3",
        f"INSERT INTO p (id, v, w) VALUES ({k}, {k}, 'a') ON DUPLICATE KEY UPDATE v = v + 1",
        f"UPDATE p SET v = v * 3 % 1000003, w = CONCAT('u', {a}) WHERE id BETWEEN {a} AND {b}",
        f"DELETE FROM p WHERE id = {a}",
        f"INSERT INTO p (id, v) SELECT k + 2000, cnt FROM agg WHERE k < {a} ORDER BY k ON DUPLICATE KEY UPDATE v = VALUES(v)",
    ])


SCHEMA_CHURN = [
    "CREATE TRIGGER p_bi BEFORE INSERT ON p FOR EACH ROW SET NEW.w = CAST(NOW(6) AS CHAR)",
    "DROP TRIGGER p_bi",
    "ALTER TABLE p ADD COLUMN at DATETIME(6) DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6)",
    "CREATE TRIGGER p_bu BEFORE UPDATE ON p FOR EACH ROW SET NEW.w = CAST(NOW(6) AS CHAR)",
    "ALTER TABLE p DROP COLUMN at",
    "DROP TRIGGER p_bu",
]


def schema_churn():
    """Adds and removes what makes writes to sq.p read the clock, every 0.3–1.5 s."""
    rnd = random.Random(SEED)
    conn = connect()
    churn = conn.cursor()
    end = time.time() + SECONDS
    step = 0
    while time.time() < end:
        time.sleep(rnd.uniform(0.3, 1.5))
        try:
            churn.execute(SCHEMA_CHURN[step % len(SCHEMA_CHURN)])
            step += 1
        except pymysql.MySQLError as e:
            with lock:
                errors[("ddl", error_code(e))] = errors.get(("ddl", error_code(e)), 0) + 1
    with lock:
        errors["ddl done"] = step

class Prepared:
    """Writes as server-side prepared statements, the rest as text, on one connection."""
    def __init__(self):
        import mysql.connector
        self.errors = (mysql.connector.Error,)
        self.conn = mysql.connector.connect(host="127.0.0.1", port=PORT, user="root",
                                            password="", database="sq", autocommit=True)
        self.text = self.conn.cursor()
        self.prepared = self.conn.cursor(prepared=True)

    def execute(self, sql):
        control = sql.split(" ", 1)[0] in ("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "SET", "SELECT")
        cur = self.text if control else self.prepared
        cur.execute(sql)
        if cur.with_rows:
            cur.fetchall()

    def fetchall(self):
        return []


def open_client():
    if PREPARED:
        c = Prepared()
        return c, c
    conn = connect()
    return conn, conn.cursor()


def error_code(e):
    return getattr(e, "errno", None) or e.args[0]


def worker(i):
    rnd = random.Random(SEED * 100 + i)
    conn, cur = open_client()
    failures = (pymysql.MySQLError,) + (cur.errors if PREPARED else ())
    end = time.time() + SECONDS
    while time.time() < end:
        tx = rnd.random() < 0.4
        try:
            if tx:
                cur.execute("BEGIN")
                for j in range(rnd.randint(1, 5)):
                    if rnd.random() < 0.2:
                        cur.execute("SAVEPOINT sp")
                        cur.execute(stmt(rnd))
                        if rnd.random() < 0.5:
                            cur.execute("ROLLBACK TO sp")
                    else:
                        cur.execute(stmt(rnd))
                cur.execute("COMMIT" if rnd.random() < 0.8 else "ROLLBACK")
            else:
                cur.execute(stmt(rnd))
            if rnd.random() < 0.3:
                cur.execute(f"SELECT * FROM r WHERE k = '{rnd.randint(1,60)}x'")
                cur.fetchall()
        except failures as e:
            code = error_code(e)
            with lock:
                errors[code] = errors.get(code, 0) + 1
                if code in (1105, 1180, 2013) and errors[code] < 4:
                    print("error", e, flush=True)
            try:
                cur.execute("ROLLBACK")
            except failures:
                conn, cur = open_client()

ts = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
if os.environ.get("CHURN") != "0":
    ts.append(threading.Thread(target=schema_churn))
[t.start() for t in ts]; [t.join() for t in ts]
print("errors:", errors)
time.sleep(3)
ok = True
for t in ["sq.r", "sq.log", "sq.agg", "sq.p"]:
    cur.execute(f"PROXY CHECKSUM TABLE {t}")
    rows = cur.fetchall()
    if len({(r[3], r[4]) for r in rows}) != 1:
        ok = False
    print(t, [(r[3], r[4]) for r in rows])
cur.execute("SHOW PROXY REPLICATION")
states = [r[3] for r in cur.fetchall()]
print(states)
if any("quarantin" in s for s in states):
    ok = False
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
